"""`python -m deberta_edu.packing`: a command alias. The code lives in :mod:`deberta_edu.data.packing`."""

from deberta_edu.data.packing import main

if __name__ == "__main__":
    main()
