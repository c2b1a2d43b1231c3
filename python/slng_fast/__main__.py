from slng_fast.cli import main

raise SystemExit(main())
