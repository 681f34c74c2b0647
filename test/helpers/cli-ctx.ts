/** A CliContext that captures what a command writes and the exit code it sets, for in-process CLI tests. */
export function ctx() {
  const out = { stdout: '', stderr: '', code: 0 };
  return {
    out,
    ctx: {
      setExit: (c: number) => { out.code = c; },
      stdout: { write: (s: string) => ((out.stdout += s), true) } as unknown as NodeJS.WritableStream,
      stderr: { write: (s: string) => ((out.stderr += s), true) } as unknown as NodeJS.WritableStream,
    },
  };
}
