import { test } from 'vitest';
import { readModel } from '../src/loader.js';
import { syntheticModel } from '../src/synthetic.js';
import { createReferenceBackend } from '../src/reference/backend.js';
test('ref cost', async () => {
  const { config, weights } = await readModel({ files: syntheticModel({ hidden_size: 520, num_hidden_layers: 2, state_size: 16, conv_kernel: 4, time_step_rank: 48, vocab_size: 256, use_bias: true, tie_word_embeddings: false }) });
  const ref = createReferenceBackend(config, weights);
  const s = ref.createState();
  const t = performance.now();
  await ref.forward(s, new Uint8Array(40).fill(5), 'all');
  for (let i = 0; i < 40; i++) await ref.forward(s, Uint8Array.of(i), 'last');
  console.log('ref 80 tokens D=520', (performance.now() - t).toFixed(0), 'ms');
});
