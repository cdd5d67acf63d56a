"""Train and evaluate generative (and classic RecBole) recommenders side by side.

    python run_recbole_genrec.py --model=TIGER
    python run_recbole_genrec.py --model=TIGER,SASRec --dataset=amazon-beauty --results_file=results/beauty.csv
"""
import sys

from recbole_genrec.cli import main

if __name__ == "__main__":
    # The same entry as the installed `recbole-genrec` command: exit 0 after a finished run, 1 with a one-line
    # message for bad input (unknown model, dataset or setting, wrong type, inconsistent config), 130 after Ctrl-C.
    sys.exit(main())
