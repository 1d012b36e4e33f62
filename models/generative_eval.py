import sys
from fastrq.models.study.generative_metrics import main
if __name__ == "__main__":
    raise SystemExit(main())
