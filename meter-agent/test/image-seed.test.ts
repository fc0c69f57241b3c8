/** The pure parts of `meter-agent image`: the seed's texts, the batch CSV, the progress line. */
import { describe, expect, it } from 'vitest';
import { checkInstalledPaths, defaultHostname, networkConfig, wifiPsk } from '../src/boot-seed.js';
import { parseBatchCsv } from '../src/device-batch.js';
import { formatProgress } from '../src/disk-image.js';
import { fileUrl } from '../src/imager-os-list.js';

describe('boot seed', () => {
  it('derives the WPA2 key as IEEE 802.11i does (its test vector)', () => {
    expect(wifiPsk('IEEE', 'password')).toBe(
      'f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e',
    );
    expect(wifiPsk('x', 'A'.repeat(64))).toBe('a'.repeat(64));
    expect(() => wifiPsk('x', 'short')).toThrow(/8 to 63/);
  });
  it('quotes an SSID netplan would misread', () => {
    expect(networkConfig({ ssid: 'yes: "no"', psk: '0'.repeat(64) })).toContain(`'yes: "no"':`);
  });
  it('hostnames and installed paths', () => {
    expect(defaultHostname('M_0001.b')).toBe('meter-m-0001-b');
    expect(
      checkInstalledPaths(
        { ca: 'ca.crt', cert: 'device.crt', key: 'device.key', attestationPolicy: 'attestation-policy.jws' },
        'house.yaml',
      ),
    ).toBe('house.yaml');
    expect(() =>
      checkInstalledPaths({
        ca: '/srv/ca.crt',
        cert: 'device.crt',
        key: 'device.key',
        attestationPolicy: 'a.jws',
      }),
    ).toThrow(
      'agent.yaml: tre.ca is /srv/ca.crt, but first boot installs it as /etc/meter-agent/ca.crt: set tre.ca: ca.crt',
    );
    expect(() =>
      checkInstalledPaths(
        { ca: 'ca.crt', cert: 'device.crt', key: 'device.key', attestationPolicy: 'attestation-policy.jws' },
        '../p.yaml',
      ),
    ).toThrow(/a file of its own/);
  });
});

describe('batch CSV', () => {
  it('reads quoted fields, comments, CRLF; names line numbers in errors', () => {
    const rows = parseBatchCsv(
      'meter,wifi_ssid,hostname\r\n# a comment\r\nm-1,"my ""home"", 2G",\r\nm-2,,pi-2\r\n',
    );
    expect(rows).toEqual([
      { line: 3, meter: 'm-1', wifi_ssid: 'my "home", 2G' },
      { line: 4, meter: 'm-2', hostname: 'pi-2' },
    ]);
    expect(() => parseBatchCsv('meter,colour\nm-1,red\n', 'd.csv')).toThrow(
      /d.csv:1: unknown column "colour"/,
    );
    expect(() => parseBatchCsv('meter\nm-1\nm-1\n', 'd.csv')).toThrow(
      'd.csv:3: meter m-1 is already on line 2',
    );
    expect(() => parseBatchCsv('meter,hostname\nm-1\n', 'd.csv')).toThrow(
      'd.csv:2: 1 fields, the header has 2',
    );
  });
});

describe('progress and URLs', () => {
  it('formats', () => {
    expect(formatProgress('copy', 50e6, 200e6, 2)).toBe('copy: 25% 50/200 MB, 25.0 MB/s');
    expect(formatProgress('copy', 50e6, undefined, 0)).toBe('copy: 50 MB, - MB/s');
    expect(fileUrl('/home/a b/m#1.img.xz')).toBe('file:///home/a%20b/m%231.img.xz');
  });
});
