import sys
from fastrq.models.training.autoencoder import main
if __name__ == "__main__":
    raise SystemExit(main())
