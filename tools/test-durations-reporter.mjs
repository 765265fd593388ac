// A node:test reporter that writes {"<test file>": seconds} as JSON: the sum of each file's top-level tests (a file
// runs its tests one after another). tools/run-tests.mjs --record uses it to refresh test/durations.json, which
// orders the files slowest first.
export default async function* durations(source) {
  const seconds = {};
  for await (const event of source) {
    if ((event.type !== 'test:pass' && event.type !== 'test:fail') || event.data.nesting !== 0 || !event.data.file)
      continue;
    const file = event.data.file;
    seconds[file] = (seconds[file] ?? 0) + (event.data.details?.duration_ms ?? 0) / 1000;
  }
  yield `${JSON.stringify(seconds)}\n`;
}
