"""``python -m cellplm.bench.embeddings <id> --train ... --test ... --embedding ... --record ...``"""

from .cli import main

raise SystemExit(main())
