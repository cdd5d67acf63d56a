"""Train and evaluate generative (and classic RecBole) recommenders side by side.

    python run_recbole_genrec.py --model=TIGER
    python run_recbole_genrec.py --model=TIGER,SASRec --dataset=amazon-beauty --results_file=results/beauty.csv
"""
import sys

from recbole_genrec.cli import main

if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError) as error:
        # Bad input (unknown model or dataset, missing fields, inconsistent config): the message says what to
        # change; a traceback would only bury it.
        sys.exit(f"recbole_genrec: error: {error}")
