from vla_flow.cli import main

raise SystemExit(main())
