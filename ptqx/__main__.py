from ptqx.cli import main

raise SystemExit(main())
