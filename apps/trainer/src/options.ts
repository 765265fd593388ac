// Commander options from the config schema (@catdog/training FIELDS): one flag per field, its help, parser and
// choices from the field's declaration, so the command line cannot drift from the config.
import { type Command, InvalidArgumentError, Option } from 'commander';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { FIELD_NAMES, FIELDS, flagName, type FieldName, type FieldSpec, type TrainConfig } from '@catdog/training';

const userDir = process.env.INIT_CWD ?? process.cwd();
/** Relative local paths are the user's (npx/nx run targets at the workspace root); URLs pass through. */
export const userPath = (p: string): string =>
  /^[a-z][a-z0-9+.-]*:\/\//i.test(p) || isAbsolute(p) ? p : resolve(userDir, p);

function choicesOf(schema: z.ZodType): string[] | undefined {
  const inner = schema instanceof z.ZodOptional ? schema.unwrap() : schema;
  return inner instanceof z.ZodEnum ? (inner.options as string[]) : undefined;
}

/** Commander turns a parser's null into '' (its "no value" filler), so a flag whose value is null ('auto') is
 * stored as this marker and turned back into null by flagsOf. */
const NULL_VALUE = Symbol('null flag value');

/** The commander Option of one field (`help` overrides the field's help text). */
export function fieldOption(key: FieldName, help?: string): Option[] {
  const spec: FieldSpec = FIELDS[key];
  const flag = spec.flag!;
  const name = flagName(key);
  if (!flag.arg) {
    const on = new Option(name, help ?? spec.help);
    return flag.negatable ? [on, new Option(`--no-${name.slice(2)}`, `do not ${name.slice(2)}`)] : [on];
  }
  const option = new Option(`${name} ${flag.arg}`, help ?? spec.help);
  const choices = choicesOf(spec.schema);
  if (choices) option.choices(choices);
  else {
    option.argParser((text: string) => {
      const value = flag.parse ? flag.parse(text) : text;
      if (!spec.schema.safeParse(value).success) throw new InvalidArgumentError(`must be ${spec.expected}.`);
      return value === null ? NULL_VALUE : value;
    });
  }
  if (flag.hidden) option.hideHelp();
  return [option];
}

/** Adds a flag for every field of the schema that has one. */
export function addConfigOptions(cmd: Command): Command {
  for (const key of FIELD_NAMES) if (FIELDS[key].flag) for (const o of fieldOption(key)) cmd.addOption(o);
  return cmd;
}

/** The fields given on the command line, local paths resolved against the user's directory. */
export function flagsOf(cmd: Command): Partial<TrainConfig> {
  const opts = cmd.opts() as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of FIELD_NAMES) {
    if (!FIELDS[key].flag || opts[key] === undefined || cmd.getOptionValueSource(key) !== 'cli') continue;
    out[key] = opts[key] === NULL_VALUE ? null : opts[key];
  }
  return resolvePaths(out as Partial<TrainConfig>);
}

/** The S3 flags of the config (--s3-endpoint, --s3-region, --s3-profile, --s3-path-style), as prep takes them. */
export const S3_FIELDS = ['s3Endpoint', 's3Region', 's3Profile', 's3PathStyle'] as const;

/**
 * Applies the S3 flags as the environment @catdog/storage reads (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_PROFILE,
 * CATDOG_S3_PATH_STYLE), so every client of the run sees them: the run directory, the dataset reader and the
 * augmentation pool's worker threads (which take the environment when they start). Flags win over the environment.
 */
export function applyS3Flags(o: Partial<Pick<TrainConfig, (typeof S3_FIELDS)[number]>>): void {
  if (o.s3Endpoint) process.env.AWS_ENDPOINT_URL_S3 = o.s3Endpoint;
  if (o.s3Region) process.env.AWS_REGION = o.s3Region;
  if (o.s3Profile) process.env.AWS_PROFILE = o.s3Profile;
  if (o.s3PathStyle !== undefined) process.env.CATDOG_S3_PATH_STYLE = String(o.s3PathStyle);
}

/** Path fields (data, out, weights, …) resolved against the user's directory; 'imagenet' and URLs stay. */
export function resolvePaths(values: Partial<TrainConfig>): Partial<TrainConfig> {
  const out: Record<string, unknown> = { ...values };
  for (const key of FIELD_NAMES) {
    const v = out[key];
    if ((FIELDS[key] as FieldSpec).path && typeof v === 'string' && v !== '' && v !== 'imagenet')
      out[key] = userPath(v);
  }
  return out as Partial<TrainConfig>;
}
