"""``python -m cellplm.bench.methods <method> --train ... --test ... --prediction ... --record ...``"""

from .cli import main

raise SystemExit(main())
