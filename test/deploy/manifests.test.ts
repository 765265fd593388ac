// The Kubernetes manifests in deploy/k8s, checked without a cluster: each object against the Kubernetes OpenAPI
// schema (kubernetes-models' validate()), unknown keys through TypeScript's excess-property check against
// kubernetes-models' own types, then what neither schema sees: Indexed Jobs, selectors, Services, references to
// ConfigMap/Secret keys, security settings, and container commands against the files and CLI flags in this repo.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1';
import { projectRoot } from '../helpers/fixtures.js';

const k8sDir = join(projectRoot, 'deploy', 'k8s');
const run = promisify(execFile);

// Loose views of the objects: the schema checks below are what make them trustworthy.
type Dict = Record<string, unknown>;
interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { configMapKeyRef?: KeyRef; secretKeyRef?: KeyRef } }[];
  envFrom?: { configMapRef?: { name: string; optional?: boolean }; secretRef?: { name: string; optional?: boolean } }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  resources?: { requests?: Dict; limits?: Dict };
  securityContext?: Dict;
  readinessProbe?: { tcpSocket?: { port: string | number } };
  livenessProbe?: { tcpSocket?: { port: string | number } };
}
interface KeyRef {
  name: string;
  key: string;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  securityContext?: Dict;
  volumes?: {
    name: string;
    secret?: { secretName: string; items?: { key: string }[] };
    configMap?: { name: string; items?: { key: string }[] };
    emptyDir?: Dict;
  }[];
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Dict;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}
interface Loaded {
  file: string;
  doc: number;
  object: K8sObject;
}

/** Every object of every manifest in deploy/k8s (kustomization.yaml is read separately). */
function loadManifests(): Loaded[] {
  const out: Loaded[] = [];
  for (const file of readdirSync(k8sDir)
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .sort()) {
    const docs = parseAllDocuments(readFileSync(join(k8sDir, file), 'utf8'));
    docs.forEach((d, doc) => {
      assert.deepEqual(d.errors, [], `${file} document ${doc}: YAML errors`);
      const object = d.toJS() as K8sObject | null;
      if (object) out.push({ file, doc, object });
    });
  }
  return out;
}
const manifests = loadManifests();
const where = (m: Loaded) => `${m.file}#${m.doc} ${m.object.kind}/${m.object.metadata?.name}`;
const ofKind = (kind: string) => manifests.filter((m) => m.object.kind === kind);

function podSpecOf(o: K8sObject): PodSpec | undefined {
  const template = (o.spec as { template?: { spec?: PodSpec } } | undefined)?.template;
  return template?.spec;
}
function podLabelsOf(o: K8sObject): Record<string, string> {
  return (o.spec as { template?: { metadata?: { labels?: Record<string, string> } } }).template?.metadata?.labels ?? {};
}
const workloads = manifests.filter((m) => podSpecOf(m.object));
const allContainers = workloads.flatMap((m) => {
  const pod = podSpecOf(m.object)!;
  return [...(pod.initContainers ?? []), ...pod.containers].map((c) => ({ m, pod, c }));
});

const MODELS: Record<string, { new (data: never): { validate(): void } }> = {
  'batch/v1 Job': Job,
  'apps/v1 Deployment': Deployment,
  'v1 Service': Service,
  'v1 ConfigMap': ConfigMap,
  'v1 Secret': Secret,
  'networking.k8s.io/v1 NetworkPolicy': NetworkPolicy,
};
// The same kinds as TypeScript types, for the unknown-key check.
const TYPES: Record<string, { module: string; type: string }> = {
  'batch/v1 Job': { module: 'kubernetes-models/batch/v1', type: 'IJob' },
  'apps/v1 Deployment': { module: 'kubernetes-models/apps/v1', type: 'IDeployment' },
  'v1 Service': { module: 'kubernetes-models/v1', type: 'IService' },
  'v1 ConfigMap': { module: 'kubernetes-models/v1', type: 'IConfigMap' },
  'v1 Secret': { module: 'kubernetes-models/v1', type: 'ISecret' },
  'networking.k8s.io/v1 NetworkPolicy': { module: 'kubernetes-models/networking.k8s.io/v1', type: 'INetworkPolicy' },
};

test('deploy/k8s holds the prep Indexed Job, the finalize Job, the augment Deployment, headless Service and NetworkPolicy, the trainer Job, config and secrets', () => {
  const names = manifests.map((m) => `${m.object.kind}/${m.object.metadata.name}`).sort();
  assert.deepEqual(names, [
    'ConfigMap/catdog-config',
    'Deployment/catdog-augment',
    'Job/catdog-prep-finalize',
    'Job/catdog-prep-split',
    'Job/catdog-trainer',
    'NetworkPolicy/catdog-augment',
    'Secret/catdog-augment-token',
    'Secret/catdog-s3',
    'Service/catdog-augment',
  ]);
});

test('every object validates against the Kubernetes schema (kubernetes-models)', () => {
  for (const m of manifests) {
    const Model = MODELS[`${m.object.apiVersion} ${m.object.kind}`];
    assert.ok(Model, `${where(m)}: no schema for ${m.object.apiVersion} ${m.object.kind}`);
    assert.doesNotThrow(() => new Model(m.object as never).validate(), `${where(m)} does not validate`);
  }
  // The validator is live: a wrong type in a copy of a real manifest is refused.
  const broken = structuredClone(ofKind('Job').find((m) => m.object.metadata.name === 'catdog-prep-split')!.object);
  (broken.spec as Dict).completions = 'four';
  assert.throws(() => new Job(broken as never).validate(), /completions must be integer/);
});

test('no unknown or misspelled keys (TypeScript excess-property check against kubernetes-models types)', () => {
  // The schema validator accepts unknown fields; object literals typed with the API's interfaces do not.
  const control = structuredClone(ofKind('Deployment')[0].object) as unknown as {
    spec: { template: { spec: { containers: Dict[] } } };
  };
  control.spec.template.spec.containers[0].imagePullPolicyy = 'Always';
  const entries: { label: string; key: string; object: unknown }[] = [
    ...manifests.map((m) => ({
      label: where(m),
      key: `${m.object.apiVersion} ${m.object.kind}`,
      object: m.object as unknown,
    })),
    { label: 'control', key: 'apps/v1 Deployment', object: control },
  ];
  const imports = new Map<string, Set<string>>();
  for (const e of entries) {
    const t = TYPES[e.key];
    assert.ok(t, `${e.label}: no TypeScript type for ${e.key}`);
    imports.set(t.module, (imports.get(t.module) ?? new Set()).add(t.type));
  }
  let source =
    [...imports].map(([mod, types]) => `import type { ${[...types].join(', ')} } from '${mod}';`).join('\n') + '\n';
  const starts: { line: number; label: string }[] = [];
  entries.forEach((e, i) => {
    starts.push({ line: source.split('\n').length - 1, label: e.label });
    source += `export const object${i}: ${TYPES[e.key].type} = ${JSON.stringify(e.object, null, 1)};\n`;
  });
  const fileName = join(projectRoot, 'test', 'deploy', '__manifests__.ts');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    target: ts.ScriptTarget.ES2022,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, version, ...rest) =>
    name === fileName ? ts.createSourceFile(name, source, version) : getSourceFile(name, version, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);
  const file = program.getSourceFile(fileName)!;
  const problems = ts.getPreEmitDiagnostics(program, file).map((d) => {
    const line = d.start === undefined ? 0 : file.getLineAndCharacterOfPosition(d.start).line;
    const label = [...starts].reverse().find((s) => s.line <= line)?.label ?? '?';
    return `${label}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
  });
  const fromControl = problems.filter((p) => p.startsWith('control:'));
  assert.equal(
    fromControl.length,
    1,
    `the check must catch the misspelled key in the control object: ${problems.join('\n')}`,
  );
  assert.match(fromControl[0], /imagePullPolicyy/);
  assert.deepEqual(
    problems.filter((p) => !p.startsWith('control:')),
    [],
  );
});

test('Indexed Jobs declare completions, and prep is told the same worker count', () => {
  const indexed = ofKind('Job').filter((m) => (m.object.spec as Dict).completionMode === 'Indexed');
  assert.ok(indexed.length >= 1, 'the prep split Job is an Indexed Job');
  for (const m of indexed) {
    const spec = m.object.spec as { completions?: number; parallelism?: number };
    assert.ok(Number.isInteger(spec.completions) && spec.completions! >= 1, `${where(m)}: Indexed needs completions`);
    assert.ok(
      spec.parallelism === undefined || spec.parallelism <= spec.completions!,
      `${where(m)}: parallelism > completions`,
    );
    for (const c of podSpecOf(m.object)!.containers) {
      const count = c.env?.find((e) => e.name === 'CATDOG_WORKER_COUNT')?.value;
      assert.equal(
        count,
        String(spec.completions),
        `${where(m)} ${c.name}: CATDOG_WORKER_COUNT must equal completions`,
      );
    }
  }
  const finalize = ofKind('Job').find((m) => m.object.metadata.name === 'catdog-prep-finalize')!;
  const split = indexed.find((m) => m.object.metadata.name === 'catdog-prep-split')!;
  assert.ok(
    podSpecOf(finalize.object)!.containers[0].args!.includes(
      `--worker-count=${(split.object.spec as Dict).completions}`,
    ),
    'prep finalize expects as many workers as the split Job runs',
  );
});

test('selectors match their pod labels; Jobs leave the selector to Kubernetes', () => {
  for (const m of ofKind('Deployment')) {
    const match =
      (m.object.spec as { selector?: { matchLabels?: Record<string, string> } }).selector?.matchLabels ?? {};
    assert.ok(Object.keys(match).length > 0, `${where(m)}: empty selector`);
    const labels = podLabelsOf(m.object);
    for (const [k, v] of Object.entries(match))
      assert.equal(labels[k], v, `${where(m)}: selector ${k}=${v} does not match the pod labels`);
  }
  for (const m of ofKind('Job')) {
    assert.equal((m.object.spec as Dict).selector, undefined, `${where(m)}: a manual Job selector is error-prone`);
    assert.equal((m.object.spec as Dict).manualSelector, undefined, `${where(m)}: manualSelector`);
  }
});

test('Services select the pods of a Deployment here, on ports its containers expose; the augment Service is headless', () => {
  for (const m of ofKind('Service')) {
    const spec = m.object.spec as {
      selector?: Record<string, string>;
      clusterIP?: string;
      ports: { port: number; targetPort?: string | number }[];
    };
    const selector = spec.selector ?? {};
    assert.ok(Object.keys(selector).length > 0, `${where(m)}: a Service without a selector`);
    const targets = ofKind('Deployment').filter((d) =>
      Object.entries(selector).every(([k, v]) => podLabelsOf(d.object)[k] === v),
    );
    assert.equal(targets.length, 1, `${where(m)}: selects ${targets.length} Deployments`);
    const ports = podSpecOf(targets[0].object)!.containers.flatMap((c) => c.ports ?? []);
    for (const p of spec.ports) {
      const target = p.targetPort ?? p.port;
      assert.ok(
        ports.some((cp) => (typeof target === 'string' ? cp.name === target : cp.containerPort === target)),
        `${where(m)}: targetPort ${target} is not a container port of ${where(targets[0])}`,
      );
    }
  }
  const augment = ofKind('Service').find((m) => m.object.metadata.name === 'catdog-augment')!;
  assert.equal(
    (augment.object.spec as Dict).clusterIP,
    'None',
    'the augment Service is headless: DNS returns every ready pod',
  );
  // Probes point at ports the container declares.
  for (const { m, c } of allContainers) {
    for (const probe of [c.readinessProbe, c.livenessProbe]) {
      const port = probe?.tcpSocket?.port;
      if (port === undefined) continue;
      assert.ok(
        (c.ports ?? []).some((p) => p.name === port || p.containerPort === port),
        `${where(m)} ${c.name}: probe port ${port}`,
      );
    }
  }
});

test('the NetworkPolicy lets exactly the trainer pods reach the augment servers, on the serving port', () => {
  const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
    Object.entries(selector).every(([k, v]) => labels[k] === v);
  for (const m of ofKind('NetworkPolicy')) {
    const spec = m.object.spec as {
      podSelector: { matchLabels: Record<string, string> };
      ingress: {
        from: { podSelector: { matchLabels: Record<string, string> } }[];
        ports: { port: string | number }[];
      }[];
    };
    const guarded = workloads.filter((w) => matches(spec.podSelector.matchLabels, podLabelsOf(w.object)));
    assert.deepEqual(guarded.map(where), ['augment.yaml#0 Deployment/catdog-augment'], `${where(m)} guards`);
    const allowed = workloads.filter((w) =>
      spec.ingress.some((rule) => rule.from.some((f) => matches(f.podSelector.matchLabels, podLabelsOf(w.object)))),
    );
    assert.deepEqual(allowed.map(where), ['trainer-job.yaml#0 Job/catdog-trainer'], `${where(m)} lets in`);
    const ports = podSpecOf(guarded[0].object)!.containers.flatMap((c) => c.ports ?? []);
    for (const rule of spec.ingress)
      for (const p of rule.ports)
        assert.ok(
          ports.some((cp) => cp.name === p.port || cp.containerPort === p.port),
          `${where(m)}: port ${p.port}`,
        );
  }
});

/** Names a container's environment holds: env entries plus every key of its envFrom ConfigMaps and Secrets. */
function environmentOf(c: Container): Set<string> {
  const names = new Set((c.env ?? []).map((e) => e.name));
  for (const from of c.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const source = manifests.find(
      (m) => m.object.kind === (from.configMapRef ? 'ConfigMap' : 'Secret') && m.object.metadata.name === ref?.name,
    );
    for (const key of Object.keys({ ...source?.object.data, ...source?.object.stringData })) names.add(key);
  }
  return names;
}

test('every referenced ConfigMap, Secret, key, volume and environment variable exists in the manifests', () => {
  const keysOf = (kind: 'ConfigMap' | 'Secret', name: string): string[] | undefined => {
    const o = manifests.find((m) => m.object.kind === kind && m.object.metadata.name === name)?.object;
    return o && Object.keys({ ...o.data, ...o.stringData });
  };
  for (const { m, pod, c } of allContainers) {
    const at = `${where(m)} container ${c.name}`;
    for (const from of c.envFrom ?? []) {
      if (from.configMapRef)
        assert.ok(
          keysOf('ConfigMap', from.configMapRef.name),
          `${at}: ConfigMap ${from.configMapRef.name} not in deploy/k8s`,
        );
      if (from.secretRef)
        assert.ok(keysOf('Secret', from.secretRef.name), `${at}: Secret ${from.secretRef.name} not in deploy/k8s`);
    }
    for (const e of c.env ?? []) {
      const cm = e.valueFrom?.configMapKeyRef;
      const sk = e.valueFrom?.secretKeyRef;
      if (cm)
        assert.ok(keysOf('ConfigMap', cm.name)?.includes(cm.key), `${at}: ConfigMap ${cm.name} has no key ${cm.key}`);
      if (sk) assert.ok(keysOf('Secret', sk.name)?.includes(sk.key), `${at}: Secret ${sk.name} has no key ${sk.key}`);
    }
    const volumes = new Set((pod.volumes ?? []).map((v) => v.name));
    for (const mount of c.volumeMounts ?? [])
      assert.ok(volumes.has(mount.name), `${at}: mounts unknown volume ${mount.name}`);
    // Kubernetes expands $(NAME) in args from the container's environment; an unknown name is passed on verbatim.
    const env = environmentOf(c);
    for (const arg of c.args ?? []) {
      for (const [, name] of arg.matchAll(/(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g))
        assert.ok(env.has(name), `${at}: $(${name}) is not in its environment`);
    }
    // A shell script's $NAME / ${NAME…} (the image's own variables aside).
    const script = shellScriptOf(c);
    if (script) {
      for (const [, name] of script.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)) {
        assert.ok(
          env.has(name) || ['HOME', 'PATH', 'TMPDIR'].includes(name),
          `${at}: the script reads $${name}, which is not in its environment`,
        );
      }
    }
  }
  for (const m of workloads) {
    const pod = podSpecOf(m.object)!;
    const mounted = new Set(
      [...(pod.initContainers ?? []), ...pod.containers].flatMap((c) => (c.volumeMounts ?? []).map((v) => v.name)),
    );
    for (const v of pod.volumes ?? []) {
      assert.ok(mounted.has(v.name), `${where(m)}: volume ${v.name} is never mounted`);
      if (v.secret) {
        const keys = keysOf('Secret', v.secret.secretName);
        assert.ok(keys, `${where(m)}: Secret ${v.secret.secretName} not in deploy/k8s`);
        for (const item of v.secret.items ?? [])
          assert.ok(keys.includes(item.key), `${where(m)}: Secret ${v.secret.secretName} has no key ${item.key}`);
      }
      if (v.configMap) {
        const keys = keysOf('ConfigMap', v.configMap.name);
        assert.ok(keys, `${where(m)}: ConfigMap ${v.configMap.name} not in deploy/k8s`);
        for (const item of v.configMap.items ?? [])
          assert.ok(keys.includes(item.key), `${where(m)}: ConfigMap ${v.configMap.name} has no key ${item.key}`);
      }
    }
  }
  // The trainer's --token-file is the mounted token Secret.
  const trainer = allContainers.find(({ c }) => c.name === 'trainer')!;
  const tokenFlag = trainer.c.args!.find((a) => a.startsWith('--token-file='))!.slice('--token-file='.length);
  const tokenMount = trainer.c.volumeMounts!.find((v) => tokenFlag.startsWith(`${v.mountPath}/`));
  assert.ok(tokenMount, `trainer: --token-file ${tokenFlag} is not under a mounted volume`);
  const tokenVolume = trainer.pod.volumes!.find((v) => v.name === tokenMount.name)!;
  assert.equal(tokenVolume.secret?.secretName, 'catdog-augment-token');
});

test('pods run as uid 1000, non-root, read-only root filesystem with /tmp writable, with requests and limits', () => {
  for (const m of workloads) {
    const pod = podSpecOf(m.object)!;
    assert.equal(pod.securityContext?.runAsNonRoot, true, `${where(m)}: runAsNonRoot`);
    assert.equal(pod.securityContext?.runAsUser, 1000, `${where(m)}: runAsUser 1000 (the image's USER)`);
  }
  for (const { m, c } of allContainers) {
    const at = `${where(m)} container ${c.name}`;
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${at}: readOnlyRootFilesystem`);
    assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${at}: allowPrivilegeEscalation`);
    assert.ok(
      (c.volumeMounts ?? []).some((v) => v.mountPath === '/tmp'),
      `${at}: /tmp must be a writable volume (temporary files, and sharp's and node's own)`,
    );
    for (const r of ['cpu', 'memory']) {
      assert.ok(c.resources?.requests?.[r] !== undefined, `${at}: requests.${r}`);
      assert.ok(c.resources?.limits?.[r] !== undefined, `${at}: limits.${r}`);
    }
  }
});

// ---- Container commands against this repository --------------------------------------------------------------

interface Invocation {
  at: string;
  file: string;
  subcommand: string;
  flags: string[];
}

/** The script of a container that runs `sh -c <script>`, else undefined. */
function shellScriptOf(c: Container): string | undefined {
  const argv = [...(c.command ?? []), ...(c.args ?? [])];
  return argv[0] === 'sh' && argv[1] === '-c' ? argv[2] : undefined;
}

/** Every `node dist/node/<cli>.js <subcommand> --flags…` a container runs, directly or in its shell script. */
function invocationsOf(at: string, c: Container): Invocation[] {
  const script = shellScriptOf(c);
  const argvs = script
    ? [...script.matchAll(/node (\S+)((?: +(?![;|&>]|2>|do\b)\S+)*)/g)].map((x) => [
        'node',
        x[1],
        ...x[2].trim().split(/ +/),
      ])
    : [c.args ?? []];
  return argvs.map((argv) => {
    assert.equal(argv[0], 'node', `${at}: runs ${argv[0]}, expected node <cli>`);
    assert.match(argv[1]!, /^dist\/node\/apps\/\w+\/src\/\w+\.js$/, `${at}: runs ${argv[1]}, expected a compiled CLI`);
    return {
      at,
      file: argv[1]!,
      subcommand: argv[2]!,
      flags: argv
        .slice(3)
        .filter((a) => a.startsWith('--'))
        .map((a) => a.split('=')[0]!),
    };
  });
}
const invocations = allContainers.flatMap(({ m, c }) => invocationsOf(`${where(m)} container ${c.name}`, c));

test("containers keep the image's entrypoint (tini) and run CLI files that exist in the repository", () => {
  for (const { m, c } of allContainers) {
    assert.equal(
      c.command,
      undefined,
      `${where(m)} ${c.name}: 'command' would replace the image's ENTRYPOINT (tini); use args`,
    );
    assert.equal(
      c.image,
      'catdog:latest',
      `${where(m)} ${c.name}: every pod runs the one image (kustomization.yaml renames it)`,
    );
  }
  assert.equal(invocations.length, 5, 'augment serve, prep split, inspect and finalize, trainer augmented');
  for (const inv of invocations) {
    // dist/node mirrors the sources (tools/build.mjs, run by the image's build stage and by npm test).
    const source = inv.file.replace(/^dist\/node\//, '').replace(/\.js$/, '.ts');
    assert.ok(existsSync(join(projectRoot, source)), `${inv.at}: ${inv.file}: ${source} does not exist`);
    assert.ok(existsSync(join(projectRoot, inv.file)), `${inv.at}: ${inv.file} is not built`);
    assert.match(inv.subcommand, /^[a-z][a-z-]*$/, `${inv.at}: subcommand`);
  }
});

async function helpOf(file: string, subcommand: string): Promise<string> {
  const { stdout } = await run(process.execPath, [file, subcommand, '--help'], {
    cwd: projectRoot,
    env: { ...process.env, CATDOG_DEBUG: '' },
  });
  return stdout;
}

test('every flag a container passes is one its CLI accepts (--help of each CLI, as a subprocess)', async (t) => {
  const groups = new Map<string, Invocation[]>();
  for (const inv of invocations)
    groups.set(`${inv.file} ${inv.subcommand}`, [...(groups.get(`${inv.file} ${inv.subcommand}`) ?? []), inv]);
  const helps = await Promise.all(
    [...groups.keys()].map(async (key) => {
      const [file, subcommand] = key.split(' ') as [string, string];
      return { key, subcommand, help: await helpOf(file, subcommand) };
    }),
  );
  for (const { key, subcommand, help } of helps) {
    await t.test(key, () => {
      // commander prints "Usage: <cli> <subcommand> …" for a subcommand it has.
      assert.match(help, new RegExp(`^Usage: \\S+ ${subcommand}\\b`, 'm'), `${key}: no such subcommand`);
      const known = new Set(help.match(/--[a-z0-9][a-z0-9-]*/g) ?? []);
      const used = new Set(groups.get(key)!.flatMap((inv) => inv.flags));
      assert.ok(used.size > 0);
      assert.deepEqual(
        [...used].filter((f) => !known.has(f)),
        [],
        `${key} --help does not list these flags`,
      );
    });
  }
});

test("the trainer dials the augment Service's DNS name and port; the servers listen on the port the Service targets", () => {
  const config = ofKind('ConfigMap').find((m) => m.object.metadata.name === 'catdog-config')!.object.data!;
  const [host, port] = config.CATDOG_AUGMENT_SERVICE.split(':');
  const service = ofKind('Service').find((m) => m.object.metadata.name === host);
  assert.ok(service, `CATDOG_AUGMENT_SERVICE names ${host}, which is not a Service here`);
  assert.ok(
    (service.object.spec as { ports: { port: number }[] }).ports.some((p) => p.port === Number(port)),
    `Service ${host} has no port ${port}`,
  );
  const serve = invocations.find((i) => i.subcommand === 'serve')!;
  const serverArgs = allContainers.find(({ c }) => c.name === 'augment')!.c.args!;
  assert.ok(serve && serverArgs.includes(`--port=${port}`), `augment serve must listen on ${port}`);
  assert.ok(serverArgs.includes('--host=0.0.0.0'), 'augment serve must listen on the pod address, not loopback');
});

test("deploy/README.md's kubectl commands create the Secrets with exactly the keys the pods read", () => {
  const readme = readFileSync(join(projectRoot, 'deploy', 'README.md'), 'utf8');
  const commands = [...readme.matchAll(/kubectl create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)/g)];
  const created = Object.fromEntries(
    commands.map(([, name, rest]) => [
      name,
      [...rest.matchAll(/--from-(?:literal|file)=([\w.-]+)=/g)].map((x) => x[1]).sort(),
    ]),
  );
  const declared = Object.fromEntries(
    ofKind('Secret').map((m) => [
      m.object.metadata.name,
      Object.keys({ ...m.object.data, ...m.object.stringData }).sort(),
    ]),
  );
  assert.deepEqual(created, declared);
});

test('kustomization.yaml applies the run in one command and renames the one image', () => {
  const k = parseAllDocuments(readFileSync(join(k8sDir, 'kustomization.yaml'), 'utf8'))[0].toJS() as {
    kind: string;
    resources: string[];
    images: { name: string; newName?: string; newTag?: string }[];
  };
  assert.equal(k.kind, 'Kustomization');
  for (const r of k.resources) assert.ok(existsSync(join(k8sDir, r)), `kustomization.yaml lists missing ${r}`);
  const files = readdirSync(k8sDir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
  // Left out on purpose: placeholder Secrets, and the repair-only finalize Job.
  assert.deepEqual(files.filter((f) => !k.resources.includes(f)).sort(), [
    'prep-finalize-job.yaml',
    'secrets.example.yaml',
  ]);
  const imageNames = new Set(allContainers.map(({ c }) => c.image!.split(':')[0]));
  assert.deepEqual(
    k.images.map((i) => i.name),
    [...imageNames],
  );
});
