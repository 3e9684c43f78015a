/**
 * Child process for test/bounds.test.ts: loads one model source from the compiled package and prints
 * one JSON line with the outcome, the load's wall time and the process's peak RSS. Run under
 * `node --max-old-space-size=256`, so a load that builds huge objects dies instead of passing.
 * argv[2]: { source, worker?: boolean, options?: object, abortAfterMs?: number }
 */
import { loadModel, loadModelInWorker } from '../../dist/src/index.js';

const spec = JSON.parse(process.argv[2]);
const options = { backend: 'js', ...spec.options };
if (spec.abortAfterMs !== undefined) {
  const ctrl = new AbortController();
  setTimeout(() => ctrl.abort(new Error('test abort')), spec.abortAfterMs);
  options.signal = ctrl.signal;
}
const t0 = performance.now();
const cpu0 = process.cpuUsage();
let out;
try {
  const model = spec.worker ? await loadModelInWorker(spec.source, options) : await loadModel(spec.source, options);
  model.dispose();
  out = { ok: true };
} catch (e) {
  out = { ok: false, name: e?.constructor?.name, code: e?.code, message: String(e?.message).slice(0, 4000) };
}
out.ms = performance.now() - t0;
// CPU time of the load (user + system, all threads): what the load costs, unlike wall time not
// stretched by other processes on a shared machine.
const cpu = process.cpuUsage(cpu0);
out.cpuMs = (cpu.user + cpu.system) / 1000;
// Peak RSS of this process. On Linux, getrusage's maxRSS (process.resourceUsage().maxRSS) starts at
// the parent's RSS at fork (exec keeps the old high-water mark), so a big test runner would inflate
// it: VmHWM in /proc/self/status is the high-water mark of this process's own memory since exec.
const status = await import('node:fs').then((fs) => fs.readFileSync('/proc/self/status', 'utf8')).catch(() => '');
const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
out.maxRssMiB = (hwm ? Number(hwm[1]) : process.resourceUsage().maxRSS) / 1024;
console.log(JSON.stringify(out));
// No process.exit: the process must end by itself (a worker or a pending read left behind would keep it alive).
