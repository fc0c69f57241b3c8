"""An IEC 62056-21 meter behind an optical head, on a real pseudo-terminal: prints the slave's
path, answers each sign-on `/?!` CR LF with its identification (baud code 5, 9600) and, after the
acknowledgement, with the next data block from the files given (the last one repeats)."""
import os
import pty
import sys
import time
import tty

master, slave = pty.openpty()
tty.setraw(slave)
print(os.ttyname(slave), flush=True)
blocks = [open(path, 'rb').read() for path in sys.argv[1:]]
served = 0
pending = b''
while True:
    pending += os.read(master, 1024)
    if b'/?!\r\n' in pending:
        pending = b''
        time.sleep(0.02)
        os.write(master, b'/ISK5ME382-1000\r\n')
    elif pending.startswith(b'\x06') and b'\r\n' in pending:
        pending = b''
        # The meter switches to 9600 baud and answers after its reaction time (IEC 62056-21:
        # 200 ms to 1.5 s), so the reader has switched too: its baud change may discard input.
        # 1.2 s, near the slow end the standard allows, so the reader's switch (which flushes its
        # queues) is over before the block comes even when a loaded machine delays it.
        time.sleep(1.2)
        os.write(master, blocks[min(served, len(blocks) - 1)])
        served += 1
