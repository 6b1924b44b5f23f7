import sys

try:  # Ctrl-C while torch imports: exit 130 quietly, as after the imports
    from harness.cli import main
except KeyboardInterrupt:
    sys.exit(130)

sys.exit(main())
