/**
 * SML 1.04 type-length-value encoding. A TL byte is `m ttt llll`: m = another TL byte follows
 * (its low nibble extends the length), ttt = 000 octet string, 100 boolean, 101 signed integer,
 * 110 unsigned integer, 111 list; the length counts the TL bytes and the value for scalars, the
 * elements for a list. `0x00` ends a message; `0x01` (an empty octet string) is an omitted optional
 * field. Integers are big-endian, 1 to 8 bytes (two's complement when signed), kept as bigint.
 */

export type SmlValue =
  | { type: 'octets'; bytes: Uint8Array }
  | { type: 'bool'; value: boolean }
  | { type: 'int'; value: bigint; size: number }
  | { type: 'uint'; value: bigint; size: number }
  | { type: 'list'; items: SmlValue[] }
  /** The end-of-message marker `0x00`. */
  | { type: 'end' };

export class SmlDecodeError extends Error {
  readonly code = 'SML_MALFORMED';
}

/** Decodes one value at `offset`; returns it and the offset after it. Throws `SmlDecodeError`. */
export function decodeSml(buf: Uint8Array, offset: number, depth = 0): { value: SmlValue; next: number } {
  if (depth > 32) throw new SmlDecodeError('lists nested too deep');
  let pos = offset;
  const byte = () => {
    if (pos >= buf.length) throw new SmlDecodeError(`value at ${offset} runs past the end`);
    return buf[pos++]!;
  };
  let b = byte();
  if (b === 0x00) return { value: { type: 'end' }, next: pos };
  const type = (b >> 4) & 0x07;
  let length = b & 0x0f;
  let tlBytes = 1;
  while (b & 0x80) {
    b = byte();
    if (b & 0x70) throw new SmlDecodeError(`bad TL continuation at ${pos - 1}`);
    length = (length << 4) | (b & 0x0f);
    if (++tlBytes > 4) throw new SmlDecodeError('TL field too long');
  }
  if (type === 7) {
    const items: SmlValue[] = [];
    for (let i = 0; i < length; i++) {
      const { value, next } = decodeSml(buf, pos, depth + 1);
      if (value.type === 'end') throw new SmlDecodeError(`end of message inside a list at ${pos}`);
      items.push(value);
      pos = next;
    }
    return { value: { type: 'list', items }, next: pos };
  }
  const size = length - tlBytes;
  if (size < 0) throw new SmlDecodeError(`length ${length} shorter than its TL field at ${offset}`);
  if (pos + size > buf.length) throw new SmlDecodeError(`value at ${offset} runs past the end`);
  const data = buf.subarray(pos, pos + size);
  pos += size;
  switch (type) {
    case 0:
      return { value: { type: 'octets', bytes: data }, next: pos };
    case 4:
      if (size !== 1) throw new SmlDecodeError(`boolean of ${size} bytes at ${offset}`);
      return { value: { type: 'bool', value: data[0] !== 0 }, next: pos };
    case 5:
    case 6: {
      if (size < 1 || size > 8) throw new SmlDecodeError(`integer of ${size} bytes at ${offset}`);
      let v = 0n;
      for (const d of data) v = (v << 8n) | BigInt(d);
      if (type === 5) return { value: { type: 'int', value: BigInt.asIntN(size * 8, v), size }, next: pos };
      return { value: { type: 'uint', value: v, size }, next: pos };
    }
    default:
      throw new SmlDecodeError(`unknown type ${type} at ${offset}`);
  }
}

/** TL bytes for a type and a length (scalars: the value's size, to which the TL bytes are added). */
function tl(type: number, size: number, isList: boolean): number[] {
  let n = 1;
  while ((isList ? size : size + n) >= 16 ** n) n++;
  let length = isList ? size : size + n;
  const out: number[] = [];
  for (let i = n - 1; i >= 0; i--) {
    out[i] = length & 0x0f;
    length >>= 4;
  }
  out[0] = out[0]! | (type << 4);
  for (let i = 0; i < n - 1; i++) out[i] = out[i]! | 0x80;
  return out;
}

/** Encodes a value (the inverse of `decodeSml`; tests and simulated meters). */
export function encodeSml(v: SmlValue): Buffer {
  switch (v.type) {
    case 'end':
      return Buffer.from([0x00]);
    case 'octets':
      return Buffer.concat([Buffer.from(tl(0, v.bytes.length, false)), v.bytes]);
    case 'bool':
      return Buffer.from([0x42, v.value ? 1 : 0]);
    case 'int':
    case 'uint': {
      const bytes: number[] = [];
      let x = BigInt.asUintN(v.size * 8, v.value);
      for (let i = 0; i < v.size; i++) {
        bytes.unshift(Number(x & 0xffn));
        x >>= 8n;
      }
      return Buffer.from([...tl(v.type === 'int' ? 5 : 6, v.size, false), ...bytes]);
    }
    case 'list':
      return Buffer.concat([Buffer.from(tl(7, v.items.length, true)), ...v.items.map(encodeSml)]);
  }
}

/** Shorthands for building SML values. */
export const sml = {
  octets: (bytes: Uint8Array | string): SmlValue => ({
    type: 'octets',
    bytes: typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes,
  }),
  none: (): SmlValue => ({ type: 'octets', bytes: new Uint8Array(0) }),
  int: (value: bigint | number, size = 8): SmlValue => ({ type: 'int', value: BigInt(value), size }),
  uint: (value: bigint | number, size = 8): SmlValue => ({ type: 'uint', value: BigInt(value), size }),
  list: (...items: SmlValue[]): SmlValue => ({ type: 'list', items }),
};
