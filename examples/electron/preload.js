// Preload (sandboxed, CommonJS): the window's only door to the main-process engine. It exposes three calls:
//   mamba.info()                              → { model, parameters, backend, where }
//   mamba.generate(prompt, options, onText)   → Promise<stats>; onText(text) is called per streamed chunk
//   mamba.abort()                             stops this window's running generations
const { contextBridge, ipcRenderer } = require('electron');

let nextId = 0;
const mine = new Set();

contextBridge.exposeInMainWorld('mamba', {
  info: () => ipcRenderer.invoke('mamba:info'),
  generate(prompt, options, onText) {
    const id = ++nextId;
    mine.add(id);
    const listener = (_event, rid, text) => {
      if (rid === id) onText(text);
    };
    ipcRenderer.on('mamba:chunk', listener);
    // Only plain data crosses the bridge: no signal object (abort() instead).
    const keys = ['maxTokens', 'temperature', 'topK', 'topP', 'repetitionPenalty', 'seed', 'stop'];
    const opts = Object.fromEntries(keys.filter((k) => options?.[k] !== undefined).map((k) => [k, options[k]]));
    return ipcRenderer.invoke('mamba:generate', id, String(prompt), opts).finally(() => {
      ipcRenderer.removeListener('mamba:chunk', listener);
      mine.delete(id);
    });
  },
  abort() {
    for (const id of mine) ipcRenderer.send('mamba:abort', id);
  },
});
