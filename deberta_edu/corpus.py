"""`python -m deberta_edu.corpus`: a command alias. The code lives in :mod:`deberta_edu.data.corpus`."""

from deberta_edu.data.corpus import main

if __name__ == "__main__":
    main()
