// curl as a client: its exit code and output, whatever they are (a refused handshake is an exit
// code to assert, not an exception). No ~/.curlrc, no proxy from the environment.
import { execFile } from 'node:child_process';

export interface CurlResult {
  /** curl's exit code: 0, or e.g. 60 (certificate not trusted), 56 (the server hung up) */
  code: number;
  stdout: string;
  stderr: string;
}

export function curl(args: readonly string[], timeoutMs = 30_000): Promise<CurlResult> {
  const argv = ['-q', '--silent', '--show-error', '--noproxy', '*', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args];
  return new Promise((resolve, reject) => {
    execFile('curl', argv, { timeout: timeoutMs + 5000, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`curl did not run: ${err.message}`));
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}
