/** A grid party's MQTT connection (mTLS, its own certificate), recording everything it receives. */
import { readFile } from 'node:fs/promises';
import type { IssuedFiles } from '@tre/tre-broker';
import mqtt, { type MqttClient } from 'mqtt';

export interface Received {
  topic: string;
  payload: string;
  at: number;
}

export class PartyClient {
  /** Every message this party received: checked by the simulator for household identifiers. */
  readonly received: Received[] = [];
  lastActivity = 0;

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      this.lastActivity = performance.now();
      this.received.push({ topic, payload: payload.toString('utf8'), at: Date.now() });
    });
  }

  static async connect(url: string, files: IssuedFiles, clientId: string): Promise<PartyClient> {
    const [key, cert, ca] = await Promise.all([
      readFile(files.key),
      readFile(files.cert),
      readFile(files.ca),
    ]);
    const client = mqtt.connect(url, {
      key,
      cert,
      ca,
      protocolVersion: 4,
      clientId,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    return new PartyClient(client);
  }

  async publish(topic: string, body: unknown): Promise<void> {
    this.lastActivity = performance.now();
    await this.client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  }

  async subscribe(filters: string[]): Promise<void> {
    await this.client.subscribeAsync(filters, { qos: 1 });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
