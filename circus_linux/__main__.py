"""`python -m circus_linux CONFIG` runs circusd."""
from circus_linux.cli.circusd import main

raise SystemExit(main())
