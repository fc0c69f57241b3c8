/** The operating system's serial binding (serialport's prebuilt native module), for real ports. */
export async function systemSerialBinding() {
  const { SerialPort } = await import('serialport');
  return SerialPort.binding;
}
