"""Redis over TLS (docs/configuration.md "Redis"), against a real redis-server with a tls-port
and certificates made with openssl for the test:

1. two agents reach the TLS port at a rediss:// address with a client certificate (the server
   requires one) as an ACL user, lead, and hand the lock over through the release notice; every
   connection they hold is on the TLS port;
2. the server's certificate is checked: signed by another CA, or without the name the agent
   dials, the agent never leads and says why; with server_name set to the name the
   certificate carries, it leads;
3. a server that wants a client certificate gets none: never leads, says the connection broke;
4. a rediss:// address at a plain port: never leads, says the TLS handshake never finished.

The server keeps a plain port too, for the harness's own commands (CLIENT LIST, ACL LOG).
"""

import os
import subprocess
import unittest

from harness import LKTestCase, acl_user_args, free_port, lock_config, wait_until

USER = "lk-tls"
PASSWORD = "tls-pw-41c9"


class RedisTlsTest(LKTestCase):

    def tls_redis(self, server_cert=None, server_key=None, auth_clients="yes"):
        certs = self.make_certs()
        port = free_port()
        args = ["--tls-port", str(port),
                "--tls-cert-file", server_cert or certs["server"],
                "--tls-key-file", server_key or certs["server_key"],
                "--tls-ca-cert-file", certs["ca"],
                "--tls-auth-clients", auth_clients]
        args += acl_user_args(USER, PASSWORD, keys="~leasekeeper/*",
                              channels="&leasekeeper/*")
        redis = self.start_redis(extra_args=args)
        redis.tls_port = port
        return redis

    def backend(self, redis, host="127.0.0.1", client_cert=True, **extra):
        certs = self.make_certs()
        path = os.path.join(self.tmp, "pw-%d" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            f.write(PASSWORD + "\n")
        b = {"name": "main", "type": "redis",
             "address": "rediss://%s:%d" % (host, redis.tls_port),
             "username": USER, "password_file": path, "ca_file": certs["ca"]}
        if client_cert:
            b.update(cert_file=certs["client"], key_file=certs["client_key"])
        b.update(extra)
        return [b]

    def named_server_cert(self):
        """A server certificate from the test CA for the name redis.test only (no IP)."""
        certs = self.make_certs()
        d = os.path.dirname(certs["ca"])
        p = lambda n: os.path.join(d, n)  # noqa: E731
        with open(p("named.ext"), "w") as f:
            f.write("subjectAltName=DNS:redis.test\nextendedKeyUsage=serverAuth\n"
                    "basicConstraints=CA:FALSE\n")
        for args in (["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", p("named-key.pem"), "-out", p("named.csr"),
                      "-subj", "/CN=redis.test"],
                     ["x509", "-req", "-in", p("named.csr"), "-CA", certs["ca"],
                      "-CAkey", certs["ca_key"], "-CAcreateserial", "-CAserial", p("ca.srl"),
                      "-out", p("named.pem"), "-days", "2", "-extfile", p("named.ext")]):
            subprocess.run(["openssl"] + args, cwd=d, check=True, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        return p("named.pem"), p("named-key.pem")

    def tls_clients(self, redis):
        """CLIENT LIST entries of the agents' user, as dicts."""
        out = []
        for ln in redis.call("CLIENT", "LIST").splitlines():
            f = dict(kv.split("=", 1) for kv in ln.split() if "=" in kv)
            if f.get("user") == USER:
                out.append(f)
        return out

    def never_leads(self, agent, app, why, what):
        lines = wait_until(lambda: [e for e in agent.log_entries() if why in str(e.get("msg"))],
                           what="the agent to log " + what)
        print("%s: logged %s" % (what, lines[0]["msg"]))
        evs = app.events_for(1.0)
        self.assertEqual([e.raw for e in evs if e.kind == "LEADER"], [])
        return lines[0]["msg"]

    def test_tls_with_client_cert_and_acl_user_leads_and_hands_over(self):
        redis = self.tls_redis()
        a, app_a, lead, app_b = self.lead_and_follow(self.backend(redis), ttl="3s",
                                                     retry_interval="5s")

        conns = self.tls_clients(redis)
        ports = sorted({c["laddr"].rsplit(":", 1)[1] for c in conns})
        print("%d connections as %s, on local port(s) %s (tls-port %d, plain %d)"
              % (len(conns), USER, ",".join(ports), redis.tls_port, redis.port))
        self.assertEqual(len(conns), 4, "two connections per agent as %s" % USER)
        self.assertEqual(ports, [str(redis.tls_port)])
        self.assertEqual(redis.call("ACL", "LOG"), [])

        ev, handoff = self.drain_handoff(a, app_a, lead, app_b)
        print("handoff over TLS through the release notice: %.1f ms (retry_interval 5s)"
              % (handoff * 1000))
        self.assertLess(handoff, 1.5)
        self.assertGreater(ev.token, lead.token)

    def test_server_certificate_is_checked(self):
        certs = self.make_certs()
        named, named_key = self.named_server_cert()
        redis = self.tls_redis(server_cert=named, server_key=named_key)
        locks = [lock_config("x", ttl="2s", retry_interval="300ms")]

        # Signed by a CA the agent does not trust.
        a = self.start_agent("pod-a", locks=locks, backends=self.backend(
            redis, ca_file=certs["other_ca"]))
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        msg = self.never_leads(a, app, "the server's certificate was refused",
                               "an unknown CA")
        self.assertRegex(msg, r"certificate was refused: .*(self-signed|issuer)")
        a.stop()

        # The right CA, but the certificate names redis.test, not 127.0.0.1.
        b = self.start_agent("pod-b", locks=locks, backends=self.backend(redis))
        app = self.connect(b)
        app.call_ok("CAMPAIGN x")
        msg = self.never_leads(b, app, "the server's certificate was refused",
                               "a certificate without the dialled address")
        self.assertIn("mismatch", msg)
        self.assertEqual(self.tls_clients(redis), [])
        b.stop()

        # server_name: the name the certificate carries.
        c = self.start_agent("pod-c", locks=locks, backends=self.backend(
            redis, server_name="redis.test"))
        app_c, lead = self.leader_app(c)
        print("with server_name redis.test: leads with token %d" % lead.token)
        self.assertEqual(len(self.tls_clients(redis)), 2)

    def test_missing_client_certificate(self):
        redis = self.tls_redis()
        locks = [lock_config("x", ttl="2s", retry_interval="300ms")]
        a = self.start_agent("pod-a", locks=locks, backends=self.backend(
            redis, client_cert=False))
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        self.never_leads(a, app, "connection to 127.0.0.1:%d failed" % redis.tls_port,
                         "a refused client")
        self.assertEqual(self.tls_clients(redis), [])

    def test_rediss_at_a_plain_port_says_so(self):
        redis = self.tls_redis()
        redis.tls_port = redis.port  # the plain port, as a misconfigured address would
        locks = [lock_config("x", ttl="2s", retry_interval="300ms")]
        a = self.start_agent("pod-a", locks=locks, backends=self.backend(redis))
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        self.never_leads(a, app, "the TLS handshake never finished: is it a TLS port?",
                         "rediss:// at a plain port")


if __name__ == "__main__":
    unittest.main(verbosity=2)
