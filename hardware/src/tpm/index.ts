export { type Swtpm, startSwtpm } from './swtpm.js';
export { Tpm } from './tpm.js';
export { TpmError } from './tpm-error.js';
