/* The smallest app of the client library: it must build and link with nothing but what
 * `pkg-config --cflags --libs leasekeeper` says, and run. It connects to no agent, and says so. */
#include <stdio.h>
#include "proto/client.h"
int main(void)
{
	struct lk_client_opts o = { .socket_path = "/nonexistent/agent.sock", .timeout_ms = 100 };
	struct lk_client *c;
	char err[256];
	int rc = lk_client_connect(&o, &c, err, sizeof(err));

	printf("lk_client_connect: %d (%s)\n", rc, rc < 0 ? err : "connected");
	return rc < 0 ? 0 : 1;
}
