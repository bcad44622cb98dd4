// Minted upstream credentials never reach the shared S3 cache: an ECR pull (SDK-minted token) and
// a GAR pull (Google access token) through a proxy whose cache is an S3 bucket (s3rver on
// 127.0.0.1), then every object s3rver stored is searched for the secrets.
import { join } from 'node:path';
import t from 'tap';
import { startRedirectFront } from '../helpers/blob-redirect.js';
import { expectNoSecrets, LeakWatch } from '../helpers/captured-proxy.js';
import { startEcrStandIn } from '../helpers/ecr-standin.js';
import { startGoogleOAuth } from '../helpers/google-oauth-standin.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { startS3rver } from '../helpers/s3rver.js';
import { AWS_ACCESS_KEY_ID as KEY_ID, SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const { awsSecretAccessKey: SECRET, ecrPassword: PASSWORD } = SECRETS;

const work = await makeTempDir('pullthrough-adapters-s3-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 2, layerBytes: 64 << 10, seed: 'adapters-s3', dir: join(work, 'image') });

const s3 = await startS3rver();
t.teardown(() => s3.stop());
// the cache's S3 client finds its (s3rver) credentials through the standard AWS chain
Object.assign(process.env, s3.env, { AWS_EC2_METADATA_DISABLED: 'true' });

const api = await startEcrStandIn({ accessKeyId: KEY_ID, secretAccessKey: SECRET, password: PASSWORD });
t.teardown(() => api.close());
const ecrRegistry = await startRegistry({ mode: 'htpasswd', username: 'AWS', password: PASSWORD });
t.teardown(() => ecrRegistry.stop());
await pushLayout(image.dir, `${ecrRegistry.host}/team/app:v1`, { creds: ecrRegistry.creds! });
const front = await startRedirectFront({ target: ecrRegistry.url, style: 'ecr', blobFile: (hex) => join(image.dir, 'blobs', 'sha256', hex) });
t.teardown(() => front.close());

const oauth = await startGoogleOAuth();
t.teardown(() => oauth.close());
const garRegistry = await startRegistry({ mode: 'token', password: SECRETS.registryPassword });
t.teardown(() => garRegistry.stop());
await pushLayout(image.dir, `${garRegistry.host}/proj/repo/app:v1`, { creds: garRegistry.creds! });
garRegistry.tokenServer!.options.verifyCredentials = (u, pw) => u === 'oauth2accesstoken' && oauth.isValid(pw);

t.test('an S3-cached pull through ECR and GAR leaves no secret in the bucket', async (t) => {
  const watch = new LeakWatch();
  const p = await watch.proxy(t, {
    configDoc: {
      upstreams: [
        { name: 'ecr.test', type: 'ecr', url: front.url, awsAccessKeyId: '${ECR_KEY_ID}', awsSecretAccessKey: '${ECR_SECRET}', awsRegion: 'us-east-1', awsEndpoint: api.url },
        { name: 'gar.test', type: 'gar', url: garRegistry.url, serviceAccountJson: '${SERVICE_ACCOUNT_JSON}' },
      ],
      cache: { s3: { bucket: s3.bucket, prefix: 'adapters/', endpoint: s3.endpoint, forcePathStyle: true } },
    },
    env: { ECR_KEY_ID: KEY_ID, ECR_SECRET: SECRET, SERVICE_ACCOUNT_JSON: oauth.serviceAccountJson },
  });
  const a = await pullImage(`${p.host}/ecr.test/team/app:v1`, join(work, 'ecr'));
  t.same(a.allDigests, image.allDigests);
  const b = await pullImage(`${p.host}/gar.test/proj/repo/app:v1`, join(work, 'gar'));
  t.same(b.allDigests, image.allDigests);
  t.equal(api.calls.length, 1, 'an ECR token was minted');
  t.equal(oauth.issued.length, 1, 'a Google access token was minted');
  const minted = {
    ...Object.fromEntries(oauth.issued.map((tok, i) => [`access token ${i}`, tok])),
    ...Object.fromEntries(garRegistry.tokenServer!.requests.flatMap((r, i) => (r.token ? [[`registry token ${i}`, r.token]] : []))),
  };
  await expectNoSecrets(t, { ...SECRETS, ...minted }, { dirs: [s3.dir] });
  await watch.check(t, minted);
});
