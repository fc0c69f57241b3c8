/**
 * Load control: one relay per actuator reference of the household's policy (`relay:<pin>`), wired
 * normally closed so the load stays powered when the agent is off or crashes; and a status LED for
 * the TRE trust state. Shedding a load opens the circuit (coil energised, pin high); restoring
 * closes it (pin low). The IO plugin is chosen by configuration:
 * a module name (e.g. `raspi-io` on a Pi, installed by the user) or an IO object (tests: MockIo).
 */
import five, { type Board, type Led, type Relay } from 'johnny-five';

export class ActuatorError extends Error {
  override readonly name = 'ActuatorError';
  readonly code = 'ACTUATOR_INVALID';
}

export type TrustLed = 'trusted' | 'untrusted' | 'unknown';

const RELAY = /^relay:(\d{1,2})$/;

/** Whether this box can switch the actuator (`relay:<pin>`). */
export function drivableActuator(ref: string): boolean {
  return RELAY.test(ref);
}

export function parseActuator(ref: string): number {
  const m = RELAY.exec(ref);
  if (!m)
    throw new ActuatorError(`actuator ${JSON.stringify(ref)} must look like relay:<pin>, e.g. relay:17`);
  return Number(m[1]);
}

export class LoadSwitch {
  private readonly relays = new Map<string, Relay>();
  private led: Led | undefined;

  private constructor(private readonly board: Board) {}

  /** Connects the board; `io` is an IO plugin instance, or a module name exporting one as default. */
  static async open(io: object | string, opts: { statusLedPin?: number } = {}): Promise<LoadSwitch> {
    const plugin =
      typeof io === 'string' ? new ((await import(io)) as { default: new () => object }).default() : io;
    const board = new five.Board({ io: plugin, repl: false, debug: false, timeout: 10_000 });
    await new Promise<void>((resolve, reject) => {
      board.once('ready', () => resolve());
      board.once('error', (err: Error) => reject(err));
    });
    const sw = new LoadSwitch(board);
    if (opts.statusLedPin !== undefined) sw.led = new five.Led({ pin: opts.statusLedPin, board });
    return sw;
  }

  private relay(actuator: string): Relay {
    let relay = this.relays.get(actuator);
    if (!relay) {
      relay = new five.Relay({ pin: parseActuator(actuator), type: 'NC', board: this.board });
      this.relays.set(actuator, relay);
    }
    return relay;
  }

  /** Cuts power to the load. */
  shed(actuator: string): void {
    this.relay(actuator).open();
  }

  /** Powers the load again. */
  restore(actuator: string): void {
    this.relay(actuator).close();
  }

  showTrust(state: TrustLed): void {
    if (!this.led) return;
    this.led.stop();
    if (state === 'trusted') this.led.on();
    else if (state === 'untrusted') this.led.blink(250);
    else this.led.off();
  }
}
