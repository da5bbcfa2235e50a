from digest.cli.main import main

raise SystemExit(main())
