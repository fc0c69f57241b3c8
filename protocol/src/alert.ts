import { z } from 'zod';
import { instant, version } from './envelope.js';

/** TRE -> household on `inbox/alert`: something the household should know about its own data. */
export const alertSchema = z.strictObject({
  v: version,
  kind: z.enum(['reading-out-of-bounds', 'conflicting-duplicate', 'register-backwards', 'attestation']),
  message: z.string().max(512),
  at: instant,
});
export type Alert = z.infer<typeof alertSchema>;
