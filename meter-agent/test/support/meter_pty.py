"""A meter on a real pseudo-terminal: prints the slave's path, then writes the telegrams in the
file given (separated by NUL bytes) to the master end, one every 50 ms, as a P1 cable would.
Stays open until stdin closes. Used by the meter-agent daemon test (the real serialport binding)."""
import os
import pty
import sys
import time
import tty

master, slave = pty.openpty()
tty.setraw(slave)
print(os.ttyname(slave), flush=True)
sys.stdin.readline()  # "go": the agent has opened the port
for telegram in open(sys.argv[1], 'rb').read().split(b'\x00'):
    if telegram:
        os.write(master, telegram)
        time.sleep(0.05)
sys.stdin.read()
