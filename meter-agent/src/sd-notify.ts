/**
 * systemd's notification protocol (sd_notify(3)) for the unit's `Type=notify` and `WatchdogSec=`:
 * `READY=1` once the agent runs, `WATCHDOG=1` every half of `WATCHDOG_USEC` while its event loop
 * turns, `STOPPING=1` when it stops. Node has no unix datagram sockets, so the datagram is sent
 * by libsystemd's own `sd_notify` (libsystemd0, on every systemd system) through koffi, the FFI
 * with prebuilt binaries the agent already ships for the TPM: sent from this process, it carries
 * this process's credentials, which is what systemd checks (`NotifyAccess=main`), and it cannot be
 * lost the way a short-lived `systemd-notify` child's message can (systemd attributes a message to
 * a unit by its sender, gone by then). Without NOTIFY_SOCKET (not under systemd) nothing is sent.
 */
import koffi from 'koffi';

export interface SystemdNotifier {
  /** READY=1, then WATCHDOG=1 at half the watchdog interval when systemd asked for one. */
  ready(): void;
  /** STOPPING=1; the watchdog pings end. */
  stopping(): void;
}

type Send = (state: string) => number;

let sdNotify: Send | undefined;

/** libsystemd's `sd_notify(0, state)`: > 0 sent, 0 no NOTIFY_SOCKET, < 0 -errno. */
function libsystemdNotify(): Send {
  if (!sdNotify) {
    const fn = koffi.load('libsystemd.so.0').func('int sd_notify(int unset_environment, const char *state)');
    sdNotify = (state) => fn(0, state) as number;
  }
  return sdNotify;
}

/**
 * The notifier for this process (`env` is `process.env`: libsystemd reads NOTIFY_SOCKET from the
 * process environment). `log` is told once when a notification cannot be sent.
 */
export function systemdNotifier(log: (line: string) => void, env = process.env): SystemdNotifier {
  if (!env.NOTIFY_SOCKET) return { ready() {}, stopping() {} };
  let send: Send;
  try {
    send = libsystemdNotify();
  } catch (err) {
    log(`cannot notify systemd (libsystemd.so.0: ${(err as Error).message}); Type=notify will time out`);
    return { ready() {}, stopping() {} };
  }
  let failed = false;
  const notify = (state: string) => {
    const rc = send(state);
    if (rc < 0 && !failed) {
      failed = true;
      log(`cannot notify systemd on ${env.NOTIFY_SOCKET}: errno ${-rc}`);
    }
  };
  const usec = Number(env.WATCHDOG_USEC);
  const mine = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === process.pid;
  let watchdog: NodeJS.Timeout | undefined;
  return {
    ready() {
      notify('READY=1');
      if (mine && usec > 0 && !watchdog) {
        // Real time, never the (possibly simulated) clock: systemd counts in real time.
        watchdog = setInterval(() => notify('WATCHDOG=1'), Math.max(1, Math.floor(usec / 2_000)));
        watchdog.unref();
      }
    },
    stopping() {
      clearInterval(watchdog);
      watchdog = undefined;
      notify('STOPPING=1');
    },
  };
}
