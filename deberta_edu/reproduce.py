"""`python -m deberta_edu.reproduce`: a command alias. The code lives in :mod:`deberta_edu.ablation.reproduce`."""

from deberta_edu.ablation.reproduce import main

if __name__ == "__main__":
    main()
