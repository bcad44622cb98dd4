// A forward proxy that refuses everything and records where clients tried to go. Clients under
// test get it as HTTP_PROXY/HTTPS_PROXY (loopback is never proxied), so a client that falls back
// from the mirror to the real registry (Docker and containerd do, podman and buildah try the
// registry after its mirrors) reaches no address but this one, and the test can see that it did.
import { createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface EgressTrap {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Each refused attempt: `host:port` of a CONNECT (https), or the absolute URL (plain http). */
  attempts: string[];
  /** Proxy variables (upper and lower case) that send clients' non-loopback traffic here. */
  env: Record<string, string>;
  close(): Promise<void>;
}

export async function startEgressTrap(): Promise<EgressTrap> {
  const attempts: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    attempts.push(req.url ?? '');
    res.writeHead(403, { 'content-type': 'text/plain', connection: 'close' }).end('egress refused by the test\n');
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('connect', (req, socket: Socket) => {
    attempts.push(req.url ?? '');
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const noProxy = '127.0.0.1,localhost,::1';
  let closed: Promise<void> | undefined;
  return {
    url,
    attempts,
    env: { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: noProxy, no_proxy: noProxy },
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      })),
  };
}
