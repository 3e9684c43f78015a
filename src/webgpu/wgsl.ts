import { readAssetText } from '../assets.js';

/**
 * The few compile-time choices a shader file makes, resolved before `createShaderModule`:
 * `#if NAME` / `#elif NAME` / `#else` / `#endif` lines keep or drop blocks by the truthiness of
 * `defines[NAME]` (no nesting needed so far, but nesting works), `{{NAME}}` is replaced by
 * the value (array sizes such as the state width N must be constants in WGSL), and
 * `#include NAME` inserts the file `include(NAME)` returns, its own directives resolved in turn
 * (WGSL has no imports; functions such as SiLU live once in common.wgsl, q8 / q4 decoding in quant.wgsl).
 */
export function preprocess(
  source: string,
  defines: Record<string, string | number | boolean>,
  include?: (name: string) => string,
): string {
  const out: string[] = [];
  // One frame per open #if: whether its enclosing block is live, whether a branch was taken, whether the current branch is live.
  const stack: { parent: boolean; taken: boolean; live: boolean }[] = [];
  const live = () => (stack.length === 0 ? true : stack[stack.length - 1].live);
  const truthy = (name: string) => {
    const v = defines[name];
    return v !== undefined && v !== false && v !== 0 && v !== '';
  };
  // An included file's lines are processed in place, so its own #if blocks follow `defines` too.
  const lines = source.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const inc = /^\s*#include\s+(\w+)\s*$/.exec(line);
    if (inc) {
      if (!live()) continue;
      if (!include) throw new Error(`WGSL preprocessor: #include ${inc[1]} without an include source`);
      if (lines.length > 1e6) throw new Error(`WGSL preprocessor: #include ${inc[1]} recurses`);
      lines.splice(i + 1, 0, ...include(inc[1]).split('\n'));
      continue;
    }
    const m = /^\s*#(if|elif|else|endif)\b\s*(\w*)/.exec(line);
    if (!m) {
      if (live()) out.push(line);
      continue;
    }
    const [, dir, name] = m;
    if (dir === 'if') {
      const parent = live();
      const cond = parent && truthy(name);
      stack.push({ parent, taken: cond, live: cond });
    } else {
      const top = stack[stack.length - 1];
      if (!top) throw new Error(`WGSL preprocessor: #${dir} without #if`);
      if (dir === 'endif') stack.pop();
      else {
        const cond = dir === 'else' ? true : truthy(name);
        top.live = top.parent && !top.taken && cond;
        top.taken ||= top.live;
      }
    }
  }
  if (stack.length) throw new Error('WGSL preprocessor: unterminated #if');
  return out.join('\n').replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    if (!(name in defines)) throw new Error(`WGSL preprocessor: {{${name}}} is not defined`);
    return String(defines[name]);
  });
}

export const SHADER_FILES = ['common', 'quant', 'matmul', 'norm', 'conv', 'scan', 'ssd', 'step', 'embed', 'sample'] as const;
export type ShaderName = (typeof SHADER_FILES)[number];

/** Loads every kernel's WGSL source once (file system in Node/Deno, fetch in browsers). */
export async function loadShaderSources(): Promise<Record<ShaderName, string>> {
  const texts = await Promise.all(SHADER_FILES.map((f) => readAssetText(`shaders/${f}.wgsl`)));
  return Object.fromEntries(SHADER_FILES.map((f, i) => [f, texts[i]])) as Record<ShaderName, string>;
}

/** FNV-1a of shader sources: pipelines and self-check verdicts are kept per version of the kernels. */
export function hashShaders(shaders: Record<string, string>): string {
  let h = 0x811c9dc5;
  for (const s of Object.values(shaders)) for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16);
}
