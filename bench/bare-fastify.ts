// The limit of our stack for bench/hot.ts: a bare Fastify server (no cache, no registry logic)
// answering what the hot paths answer, as cheaply as Fastify can: a manifest held in memory, the
// HEAD of a blob from a size known in advance, and a Range of a blob by one positional read of a
// descriptor opened once. Run as its own process: `node --import tsx bench/bare-fastify.ts PORT
// MANIFEST_FILE BLOB_FILE`; prints "listening" once it does.
import { open, readFile } from 'node:fs/promises';
import Fastify from 'fastify';

const [port, manifestFile, blobFile] = process.argv.slice(2);
const manifest = await readFile(manifestFile!);
const blob = await open(blobFile!, 'r');
const size = (await blob.stat()).size;
const app = Fastify({ logger: false });

app.get('/manifest', async (_req, reply) => reply.header('content-type', 'application/vnd.oci.image.manifest.v1+json').send(manifest));
app.head('/blob', async (_req, reply) => reply.header('content-length', String(size)).send());
app.get('/blob', async (req, reply) => {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (!m) return reply.code(416).send();
  const start = Number(m[1]);
  const end = Math.min(Number(m[2]), size - 1);
  const buf = Buffer.allocUnsafe(end - start + 1);
  const { bytesRead } = await blob.read(buf, 0, buf.length, start);
  return reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`).send(buf.subarray(0, bytesRead));
});
await app.listen({ host: '127.0.0.1', port: Number(port) });
console.log('listening');
