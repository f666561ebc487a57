/* leasekeeper run: wrapper mode (SPEC §5). Not built yet: see issue 4. */
#include <stdio.h>

#include "agent/cli.h"

int lk_cli_run(int argc, char **argv)
{
	fputs("leasekeeper run: not implemented yet\n", stderr);
	return 2;
}
