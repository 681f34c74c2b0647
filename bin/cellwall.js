#!/usr/bin/env -S node --max-semi-space-size=64
// `cidr aggregate` is a Unix filter: take a fast path that skips loading commander and the other commands.
if (process.argv[2] === 'cidr') {
  const { fastCidr } = await import('../dist/src/core/cidrtool.js');
  const code = fastCidr(process.argv.slice(3));
  if (code !== null) process.exitCode = code;
}
if (process.exitCode === undefined) {
  const { main } = await import('../dist/src/cli/main.js');
  main(process.argv).then((code) => { process.exitCode = code; });
}
