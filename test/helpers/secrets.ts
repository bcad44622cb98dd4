// Every secret the adapter tests hand to pullthrough and its stand-ins, in one place. The tests
// take their credentials from here; LeakWatch searches each file's proxy logs, cache dirs and error
// bodies for them, and scripts/check-secrets.ts searches a whole run's proxy logs and tap output.
// They are fixed test values (never real credentials), so that the check, run in a separate
// process after the tests, knows them. Tokens the stand-ins mint at run time carry a fixed mark.

/** Not a secret (it names a key and travels in SigV4 headers), but the ECR stand-in needs it. */
export const AWS_ACCESS_KEY_ID = 'AKIAPULLTHROUGHTEST0';

export const SECRETS = {
  awsSecretAccessKey: 'pA5P9D8N8wpKIuIMjA9itBwD/bW7C3uvbXFhfICyB',
  /** not the stand-in's secret key: SigV4 signatures made with it are refused */
  wrongAwsSecretAccessKey: 'not-the-secret-key-L5Ax0IuUbaScxkjUzjoTesf7',
  /** the password inside ECR authorization tokens, base64("AWS:" + password) */
  ecrPassword: 'ecr-J95nAxVl2mQu-TwiLXlpZ_DC3er0zlMpodn8',
  staleEcrPassword: 'stale-ecr-O4yMk7LGXxOXRXBqP6791sX',
  refusedEcrPassword: 'refused-ecr-CdC94X9Co5f6R7LpmA07Qb3',
  /** a Docker Hub access token (what the Docker Hub stand-in's token service accepts) */
  dockerHubToken: 'dckr_pat_GKxwUgjYRNqik7FmAeMUaei0iUeC6',
  refusedDockerHubToken: 'dckr_pat_revoked_cEx9gKrE85c5hbQvwQCE',
  ghcrToken: 'ghp_yHxIlwTo5sCTeVKhJYZ4VjNTgfQAiuBbFz5U',
  refusedGhcrToken: 'ghp_expired_bLM1QjkN90D5wtGpzJaEB9r',
  /** the password of a plain registry upstream, and of the stand-ins' push accounts */
  registryPassword: 'pw-g0pGQZoqWmVdj3hMc9yVCRZDanhlGLIgoam',
  /** a service account's private key (the key JSON holds it, as SERVICE_ACCOUNT_JSON does) */
  googlePrivateKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDOGIwtjQ/4yj0g',
    'g9NG6hA4X1zAadN8E6Bk06vFUvoVv3kAaFZTZbLt53f8Mruk0VblUncjA7YHDFtO',
    '7rM1eOCoyIjQM7xmO6zGkoUw3kN5AnDXvKUu4vBdllxsnIv9haf3tF1l+jX5oseM',
    'BJsY6IjuBptsNZereJCjGr7Fp59ZMgod195O8OLUFhP8YaceBdRV4YkC/H/9xAZt',
    'bw9odpKC+aUAQQr3OLWLZmvin93XxzMA3Dtdhl4cpJQirjy5N69fOqv3HO0cg4v6',
    'zfkVQqJjPk/AdhGb76GIUrMi/EKt82x7awM21jOAJRPEdgM9OmYSgVQbXByj4jRo',
    '1ZS4tFI7AgMBAAECggEABmbblEmIgIfxA119zcIqTO351vo9OP7UL8vQh/Juf+up',
    'u7aQM+cWM0QtxVY4GAsLE62AeqgDWqTOHfLyF5MtJf13x12hX7IISUaL+Hs+FBSx',
    't6K4T+8kXCS9QXHCwXKmqzNdkVeG9K9vsCWS7G7CeMc1NNSq5Oq0iwKxR46XGw31',
    'LZoqFGNEboJZTnvOZA12gY8ejH0rhQ4Sijx2VCuunLDhYjlFSn+mGVF+QN9mLcHv',
    'k6p2E2RP66lz0fNEJWur1Fpnmcec6R6PAAsWnaTOXVhsSuyIhbUvcF0tf6UH3Y03',
    'l2Nxrv1iqbSG1cJ6khW4Rngz0VMhocDVvzaG3PJfdQKBgQDznyXTuc+YtFzImKqN',
    'halowCnNEUcA2eNz9Rvx8NSQydpTrGCT5BN9w3WfqE3AJFCEWcj+2e8j1dcmBQpL',
    'kOhyOUNXuTi3sGcue45FQCJo/VJbCUBYqfIqFmC0ay3dmyEpEDztwbJaDVNh7ZPO',
    'mFmGuOOUf4+pl8714K5D6r3iZQKBgQDYkUq7i/D5TmYsYmFxQ2z4cL6IQnp0P4R8',
    'xgpQ/uhhH5lGjjwzZG6P48UBY8Ipy62CxAWOAc5L6AVdbHhiVVv/1xiRnxROeyKh',
    'gpdVOrsaYXhdHhzGJ2/2Bi/+tl7O1ET0McTW91l6bE4S/0YnBQsqEOQu9dLpBNIP',
    '0n0VjovIHwKBgQCYoCHwrT4zqvtd6Ncg5pYlvA30HVjgXaEz6mFhh8GEHBGdziaL',
    'QJ49chDkv2pGb/nJkP5tO1eombW6afnzMYuO0/Uupim0Wt2pr1qIZA+qutm3kuov',
    'IflHCNH49hS7+w4hTbz+LxVveV29wjuReLzNvFNHm0sDssnEHMjQX+YqSQKBgE/H',
    '3n8Ow5wkHJG3QGxoSWmQpzAtRU0z5QvOLRi/fz3gVSff2B+anPxXDUlAxdN93BKz',
    'QdSZp7Tg6bEL96FKDtVGGR/0OZfb1tsm77cPJsRGKgAryq/Y8W7xwpaT+oM5QZmw',
    'B/KlNopaAb0P23kea4l4pYcDOkprYzM++KOLWsVDAoGADnG95cV1BuWdjvgMTD1U',
    '69zNmiXhoTIFB+9choi4JyCZlImLhr5JIxNKF7TwKp4dwmAS+w1FI1lT6HWh4fiw',
    '+kfYzBNNjdq18WbPUAEudMCi3ZuWVK3A+DjwSxFL5a0Nm4pt+HPiN3MocNv5Evse',
    'LcsfsD4kHEVoFzro9cM8elk=',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** the same service account with a key Google does not know */
  googleUnknownPrivateKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCiuDjIIrR0GspE',
    'aZNH8KqOPJ+7bXTVT3JpZwkmng80+NH5YQGDdf8C8L+FhXLDswlv3iaKpjk91uyS',
    'OajNGSfX/pb1w/jdraH3UR3JQRL6N7UkUP8zV3LWoT0KNXbooYAXFyerDNwgU44O',
    'o8thsqLcbjky/+yT0vdzIl+u5Ipy1Xt3k0GPAY2RWJ0KTKtgXT+5Qaz916n4jqRB',
    'T41fwFhBSrKtwYjVugN3EeYzNXvuJ6r7nkCrhYwAfHSQE7q31J0k1bZhN4zW1l1w',
    'gO+51z/ShQC09Iy9W1qYDShJwL4B5yuXUGip493xK5XOFThvsH9OoysVwSbyBJ8Z',
    'UNfwnbivAgMBAAECggEACBpTXYf443U4EEsPlfwCij2zmJI9SKgBowUJ/B3P1Qv0',
    '7M2rVSAJmFxjtSLtkZg3RpZR5gKcBBvRQQDVCo2Pod5gJxHgsS1FzPqBmLWAW+xt',
    'PUc5RhW7Nrvlvb3m03PDXKL/CzIDPira/piidpV+Larhd0wuPDg7sUSLbjqcOFab',
    'wro+46zZfDQdEDmwpbjSAd3uI6DpwDriCVlVA1DWVFogV60Ev6KNc3eZUXRgeB/V',
    'jAqqIxwJpaIwtS1vdiV8FBpQBQUTv+wyA6jRoS46CQDOHDRGyBCI0L2mrdGCg2Tf',
    'mBPD+00qksw4/24ymHqIOSNpzUQ604A1s/60ACXm4QKBgQDb3VYRbJb/7qAxxfXr',
    '0sQYPkNv2fg4tCVra3uyZx1BYKdraxY4ntzdZZ3w9o9s4rm6SNNUFYhAqyEQfmQl',
    'CzfYkJbLB9pbYrOWU/HH4VUxcOhUBh2b1S+WICLFMGQjO/7uGbauHqfX263dT2tU',
    'i6uqJZUiK+Vr+7CGRqP0fC4d4QKBgQC9dov5qWYHuoUsrogFS9N1ekrCh0u0KxA1',
    'AzelbAn+5e+qvf474quk6NrGXN+kZpiZmMWniMIMpMsvZ5wAjAX7Z3aQuIwo3TcP',
    'cp/re8yZhZdAyInpJ0sJW/4LIJBP3f+J8AVtRZq2+gM/U7NXMEuIlhSW69EiGOFH',
    'cQVLZ2wIjwKBgE0luRGcHM/pF2TfpY7+AbjQADG7NhIPhCHRMTJEZEuQcq6KgN2V',
    'QMKe6XCn02PNmoX3D9AtTgYDBjMXZmRpL0taUM8lDkWKuKFDC0+rjY0vpRX2n2US',
    'xQPUet7eQATtBGLfuu4V66ceej9xoqOj7rRhQ5cd9/6P7jzvhJBBEp2BAoGAA+rO',
    'jBPniyNdG4ZkQ4/EyHoFz63Sb+AwDpiJbv8j2cRRRzt0ZTKTj+5Mj6td6F1CrHJP',
    'K96U/IPvu4Qt4okCmqcR+X4HT9T7DXO2QL0nhskPToSW7V4lnATt5LcApNYXMXfn',
    '9NFqmHvk00tcuuHBvgo0VMZ9ZXIUPlDk5iE2R5sCgYBlU1Ag9Bn72Y+DEoQcKPsY',
    'e8L5DVTwXnqaX0sdXOFb/BooB9fL05eY/z42YcsM6GkF81UOynOh/ohRu0thehSH',
    'K6yhimP/+nbeh12LT8zMRtK58coBwVJ3wfGlFjQDj0JIMvHlkQaANF39Mgu2zWWg',
    'qTzsgk4yoVhr3rr7ULkEQw==',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** passwords of pullthrough's own users (auth.htpasswd), and one nobody has */
  alicePassword: 'alice-pw-R7fQ2mXk9TzL4vBn8sWd',
  bobPassword: 'bob-pw-H3jK8pQw2ZxC6vNm1rTy',
  ciPassword: 'ci-pw-Y5tG9kLm3QwE7rVb2nXz',
  wrongClientPassword: 'wrong-pw-P8dF4hJk6LmN2bVc9xQs',
  /** a password written in clear into an htpasswd file (a line pullthrough ignores, and must not log) */
  htpasswdClearPassword: 'clear-pw-Wm4Rt8Yq2Kv6Nb3Xs9Lp',
  /** the test CA's private key (test/helpers/tls.ts signs the test certificates with it; EC P-256, PKCS#8) */
  tlsCaKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgv5mSQWmNrZDLOd88',
    'V/FzNP9xY2ZJxWSjZCDHIJACUoKhRANCAAQ4hsdWlv37iuCU494NrW6ZqUJPtnwx',
    'B9HYWBZirk3Bvp/e3AV2n7J+qoS1TsSShPpzW9jeHRHyDYXp8Kn51oiU',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** the private key of the proxy's test server certificates (EC P-256, PKCS#8) */
  tlsServerKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3eON0nIHTlPE3UDj',
    'rAkkVtlVRGWCREL30AXEOzOwpQmhRANCAARthBSzRkjMPIjzsWtNNTY5rpp6jOmv',
    '6d73PFhWdn7HJowPC/VBmO7TLNVcV9wQDIa2rbtQAEFv9v+r8bafCryv',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** the key of the certificate that replaces the first one in the reload tests (EC P-256, PKCS#8) */
  tlsNextServerKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgStUBBg3xGBMWgVfm',
    '/72GM4GFDTZ+YpQ5i+pSntB30uyhRANCAASoue8AS52f0DsPlmP84Kczn32KSn5A',
    'uBLIFj9SG3bIrM3VRZGT3V3vFW6FRRP0ROb9PGPbleGw8odvj2PqzyTL',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** the private key of the test client certificates (mTLS; EC P-256, PKCS#8) */
  tlsClientKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0LlWdDCFV9wacpUb',
    'VZojw4Ofg1WTBtAclrChciq8Z1qhRANCAARMiKxIblfqzRG8nBErWsY9vr22+b4v',
    '1eMAjiCsn3tscp2ElgXGVMGe9sU1ORAG+RaXcO1hEatxWcLcm5mt0tJ1',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** another CA's key: its certificates are the ones an mTLS proxy must refuse (EC P-256, PKCS#8) */
  tlsOtherCaKey: [
    '-----BEGIN PRIVATE KEY-----',
    'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgiK7yXH823+8xisYN',
    '/k3Hdz/sff1GoFKlr+EVq9fjrkuhRANCAASEdOg8VBcI5YpaxGkMayScIHAUYk4+',
    '8VRdc8A+yUZz4tsgJKsv1F8Ku2dXdbfDz7GSYKy6ktmL9ZrwqlYdqtwN',
    '-----END PRIVATE KEY-----',
  ].join('\n'),
  /** clientCredentials: passthrough: the upstream's users, whose own credentials clients send */
  passthroughAlicePassword: 'pt-alice-Hq7Vn2Lx9Ws4Kd8Zb3Rm',
  passthroughCarolPassword: 'pt-carol-Jt5Yp8Nc2Qv6Gx1Fs9Lw',
  passthroughDavePassword: 'pt-dave-Ub4Xe7Mk3Ta9Hr2Vn6Pz',
  /** a wrong password a client sends for alice */
  passthroughWrongPassword: 'pt-wrong-Ck8Lq2Wd5Ys7Bn4Jh1Gx',
  /** part of every Google access token the OAuth stand-in issues */
  googleAccessTokenMark: 'gat-k0qwEDwz337oqkTrJ91dOyAIhdo4lPG8fA',
  /** part of the jti claim of every registry token the token server issues */
  registryTokenMark: 'rtm-Vn9KpL4wQm2xGat7Zc3BsR8uHy6Tj1Ed',
} as const;

const MIN_NEEDLE = 12;

/**
 * What `secret` looks like wherever it may have leaked: itself (a PEM key: each line of its body),
 * and its base64 and base64url encodings at each of the three byte alignments, so that it is also
 * found inside any base64'd text that holds it, such as `Basic user:pass`, ECR's `AWS:<password>`
 * token or a JWT's claims.
 */
export function needles(secret: string): string[] {
  const parts = secret.includes('\n') ? secret.split('\n').filter((l) => !l.startsWith('-----')) : [secret];
  const out = new Set<string>();
  for (const part of parts) {
    if (part.length < MIN_NEEDLE) continue;
    out.add(part);
    const bytes = Buffer.from(part);
    for (let shift = 0; shift < 3; shift++) {
      // After `shift` unknown bytes the first group mixes them in, so it is skipped; the last
      // group may mix in what follows, so only whole groups count.
      const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
      const skip = shift === 0 ? 0 : 4;
      const groups = Math.floor((bytes.length - (shift === 0 ? 0 : 3 - shift)) / 3);
      const needle = encoded.slice(skip, skip + 4 * groups);
      if (needle.length < MIN_NEEDLE) continue;
      out.add(needle);
      out.add(needle.replace(/\+/g, '-').replace(/\//g, '_'));
    }
  }
  return [...out];
}

/** The names of the secrets that occur in `text`, in any of the forms above. */
export function secretsIn(text: string | Buffer, secrets: Readonly<Record<string, string | undefined>> = SECRETS): string[] {
  const hay = typeof text === 'string' ? text : text.toString('latin1');
  return Object.entries(secrets).flatMap(([name, secret]) => (secret !== undefined && needles(secret).some((n) => hay.includes(n)) ? [name] : []));
}
