"""`python -m deberta_edu.bench`: a command alias. The code lives in :mod:`deberta_edu.training.bench`."""

from deberta_edu.training.bench import main

if __name__ == "__main__":
    main()
