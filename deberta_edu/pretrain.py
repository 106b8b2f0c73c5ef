"""`python -m deberta_edu.pretrain`: a command alias. The code lives in :mod:`deberta_edu.training.pretrain`."""

from deberta_edu.training.pretrain import main

if __name__ == "__main__":
    main()
