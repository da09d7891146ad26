# Two commands from nothing, on Debian (as root, or a user with sudo): each installs what is
# missing (Debian packages, the .venv virtual environment with dbgvm in it), quietly when
# everything is there, then does its job. The work is in scripts/dev.sh.
.PHONY: run test setup

run:                    ## boot the bundled guest at the monitor prompt
	@bash scripts/dev.sh run $(ARGS)

test:                   ## run the tests
	@bash scripts/dev.sh test $(ARGS)

setup:                  ## only set up
	@bash scripts/dev.sh setup
