/**
 * Every failure the runtime reports on purpose is a `MambaError` subclass with a stable `code`,
 * so callers can branch on `err.code` (or `instanceof`) instead of parsing messages.
 */
export class MambaError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

const MAX_ITEM_CHARS = 200;

/** A model file is malformed: bad safetensors header, wrong shape, missing tensor, bad JSON. */
export class ModelFormatError extends MambaError {
  /** The file the problem was found in (e.g. `model.safetensors`, `config.json`). */
  readonly file: string;
  /** The tensor or config field at fault, when there is one. */
  readonly item?: string;
  constructor(file: string, message: string, item?: string, options?: { cause?: unknown }) {
    // Tensor and field names come from the file: a hostile 10 MB name must not become a 10 MB message.
    const shown = item !== undefined && item.length > MAX_ITEM_CHARS ? `${item.slice(0, MAX_ITEM_CHARS)}...` : item;
    super('MODEL_FORMAT', `${file}${shown ? ` [${shown}]` : ''}: ${message}`, options);
    this.file = file;
    this.item = shown;
  }
}

/**
 * A model source points at nothing loadable: the directory does not exist, or has no config.json;
 * a Hugging Face Hub id whose repository, revision or config.json the Hub does not have. (A
 * malformed file that is there is a `ModelFormatError`.)
 */
export class ModelNotFoundError extends MambaError {
  /** The directory as given (relative paths resolve against the process's working directory), or the Hub's `org/name`. */
  readonly path: string;
  constructor(path: string, message: string) {
    super('MODEL_NOT_FOUND', `${path}: ${message}`);
    this.path = path;
  }
}

/** The config is well-formed but describes a model this engine cannot run. */
export class UnsupportedModelError extends MambaError {
  constructor(message: string) {
    super('UNSUPPORTED_MODEL', message);
  }
}

/** An option passed by the caller is impossible (negative maxTokens, top-p > 1, ...). */
export class InvalidOptionError extends MambaError {
  readonly option: string;
  constructor(option: string, message: string) {
    super('INVALID_OPTION', `option ${option}: ${message}`);
    this.option = option;
  }
}

/** The requested backend cannot run here (no WebGPU adapter, no WASM SIMD, ...). */
export class BackendUnavailableError extends MambaError {
  readonly backend: string;
  /** The reason alone, without the "backend ... is not available" preamble. */
  readonly reason: string;
  constructor(backend: string, reason: string) {
    super('BACKEND_UNAVAILABLE', `backend '${backend}' is not available: ${reason}`);
    this.backend = backend;
    this.reason = reason;
  }
}

/** The model does not fit a memory limit (WASM 4 GiB, GPU buffer limits, a caller budget). */
export class OutOfMemoryError extends MambaError {
  constructor(message: string) {
    super('OUT_OF_MEMORY', message);
  }
}

/** Fetching a model over the network failed. */
export class FetchError extends MambaError {
  readonly url: string;
  readonly status?: number;
  constructor(url: string, message: string, status?: number, options?: { cause?: unknown }) {
    super('FETCH', `${url}: ${message}`, options);
    this.url = url;
    this.status = status;
  }
}

/** The model (or session) was used after `dispose()`. */
export class DisposedError extends MambaError {
  constructor(what: string) {
    super('DISPOSED', `${what} has been disposed`);
  }
}

/** A GPU device was lost or reported an error mid-computation. */
export class DeviceLostError extends MambaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DEVICE_LOST', message, options);
  }
}
