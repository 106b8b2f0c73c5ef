"""`python -m deberta_edu.finetune`: a command alias. The code lives in :mod:`deberta_edu.training.finetune`."""

from deberta_edu.training.finetune import main

if __name__ == "__main__":
    main()
