"""``python -m project fit|validate|test ...`` (predictions for new images: ``scripts/predict.py``)"""

from project.cli import main

if __name__ == "__main__":
    main()
