// Minimal typings for the parts of johnny-five this package uses (no @types package is installed).
declare module 'johnny-five' {
  import type { EventEmitter } from 'node:events';
  export class Board extends EventEmitter {
    constructor(options: { io?: unknown; port?: string; repl?: boolean; debug?: boolean; timeout?: number });
    isReady: boolean;
  }
  export class Relay {
    constructor(options: { pin: number | string; type?: 'NO' | 'NC'; board?: Board });
    open(): void;
    close(): void;
    readonly isClosed: boolean;
  }
  export class Led {
    constructor(options: { pin: number | string; board?: Board });
    on(): void;
    off(): void;
    blink(ms?: number): void;
    stop(): void;
  }
  const five: { Board: typeof Board; Relay: typeof Relay; Led: typeof Led };
  export default five;
}
