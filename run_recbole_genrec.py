"""Train and evaluate generative (and classic RecBole) recommenders side by side.

    python run_recbole_genrec.py --model=TIGER
    python run_recbole_genrec.py --model=TIGER,SASRec --dataset=amazon-beauty --results_file=results/beauty.csv
"""
from recbole_genrec.cli import main

if __name__ == "__main__":
    main()
