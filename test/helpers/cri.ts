// Kubernetes' way of pulling through containerd, without a kubelet: a CRI ImageService.PullImage
// call on containerd's gRPC socket, as the kubelet and crictl make it (Debian has no crictl).
//
// Written here rather than with @grpc/grpc-js because the project has no gRPC dependency and
// this is one unary call whose messages hold one string each: gRPC's framing over node:http2
// (a 5-byte prefix per message, the status in trailers) and protobuf's encoding of a string field
// (a tag, a varint length, the bytes) take a few lines, and generated code would take more.
import { connect, constants } from 'node:http2';
import { connect as netConnect } from 'node:net';

/** A field-1 string inside a field-1 message: PullImageRequest{image: ImageSpec{image: ref}}. */
function pullImageRequest(ref: string): Buffer {
  const spec = stringField(1, Buffer.from(ref));
  return stringField(1, spec);
}

function stringField(field: number, bytes: Buffer): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(bytes.length), bytes]);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** Field 1 (a string) of a protobuf message, skipping any other varint or length-delimited field. */
function firstString(msg: Buffer): string {
  let at = 0;
  const readVarint = (): number => {
    let n = 0;
    for (let shift = 0; at < msg.length && shift < 35; shift += 7) {
      const b = msg[at++]!;
      n |= (b & 0x7f) << shift;
      if (b < 0x80) return n >>> 0;
    }
    throw new Error('malformed protobuf varint');
  };
  while (at < msg.length) {
    const tag = readVarint();
    if ((tag & 7) === 0) {
      readVarint();
      continue;
    }
    if ((tag & 7) !== 2) throw new Error(`unexpected protobuf wire type ${tag & 7}`);
    const len = readVarint();
    const value = msg.subarray(at, at + len);
    at += len;
    if (tag >>> 3 === 1) return value.toString('utf8');
  }
  return '';
}

export class CriError extends Error {
  constructor(
    readonly grpcStatus: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Calls `runtime.v1.ImageService/PullImage` for `ref` on the containerd socket and resolves with
 * the image reference CRI answers (the image id, the config's digest); rejects with a CriError
 * carrying gRPC's status and message when the pull fails.
 */
export function criPullImage(socket: string, ref: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = connect('http://localhost', { createConnection: () => netConnect(socket) });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`CRI PullImage ${ref}: no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (err: Error | undefined, value?: string): void => {
      clearTimeout(timer);
      session.close();
      if (err) reject(err);
      else resolve(value ?? '');
    };
    session.on('error', (err) => done(err));
    const msg = pullImageRequest(ref);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(msg.length, 1); // byte 0: not compressed
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: '/runtime.v1.ImageService/PullImage',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    let message = '';
    const takeStatus = (headers: Record<string, unknown>): void => {
      if (headers['grpc-status'] !== undefined) status = String(headers['grpc-status']);
      if (headers['grpc-message'] !== undefined) message = decodeURIComponent(String(headers['grpc-message']));
    };
    stream.on('response', takeStatus); // a trailers-only answer has the status in its headers
    stream.on('trailers', takeStatus);
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('error', (err) => done(err));
    stream.on('close', () => {
      if (status === undefined) return done(new Error(`CRI PullImage ${ref}: the stream closed without a gRPC status`));
      if (status !== '0') return done(new CriError(Number(status), message));
      const body = Buffer.concat(chunks);
      done(undefined, firstString(body.subarray(5, 5 + body.readUInt32BE(1))));
    });
    stream.end(Buffer.concat([prefix, msg]));
  });
}
