import type { GenerationChunk, GenerationStats } from '../../src/index.js';

/** Drains a generation stream: every chunk, the bytes and text joined, and the final stats. */
export async function collect(it: AsyncIterable<GenerationChunk>): Promise<{
  chunks: GenerationChunk[];
  bytes: Uint8Array;
  text: string;
  stats: GenerationStats;
}> {
  const chunks: GenerationChunk[] = [];
  for await (const c of it) chunks.push(c);
  return {
    chunks,
    bytes: Uint8Array.from(chunks.flatMap((c) => [...c.bytes])),
    text: chunks.map((c) => c.text).join(''),
    stats: chunks.at(-1)?.stats as GenerationStats,
  };
}
