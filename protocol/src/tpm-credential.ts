/**
 * TPM2_MakeCredential done in software (TPM 2.0 Library, Part 1, 24 "Credential Protection"; Part 3,
 * 12.6): the regulator wraps a secret so that only the TPM holding both the endorsement key (EK) and
 * an object with the given Name can recover it with TPM2_ActivateCredential. Getting the secret
 * back proves the attestation key is resident in that TPM, which is what its certificate claims.
 */
import {
  createCipheriv,
  createECDH,
  createHash,
  createHmac,
  constants as cryptoConstants,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { TPM_ALG, TPM_ECC_NIST_P256, type TpmPublic, tpmPublicKey } from './tpm-public.js';
import { sized, u32be } from './tpm-wire.js';

const DIGEST_BYTES = 32;

/** The counter mode both KDFs share: SHA-256 blocks for counter 1, 2, ... until `bits` are made. */
function counterMode(bits: number, block: (counter: Buffer) => Buffer): Buffer {
  const out: Buffer[] = [];
  for (let i = 1; out.length * DIGEST_BYTES < bits / 8; i++) out.push(block(u32be(i)));
  return Buffer.concat(out).subarray(0, bits / 8);
}

/** KDFa (Part 1, 11.4.10.2) with HMAC-SHA-256: `bits` of key from `key`, label and contexts. */
export function kdfa(key: Buffer, label: string, contextU: Buffer, contextV: Buffer, bits: number): Buffer {
  const fixed = Buffer.concat([Buffer.from(`${label}\0`), contextU, contextV, u32be(bits)]);
  return counterMode(bits, (i) => createHmac('sha256', key).update(i).update(fixed).digest());
}

/** KDFe (Part 1, 11.4.10.3) with SHA-256, for ECDH-derived seeds. */
export function kdfe(z: Buffer, label: string, partyU: Buffer, partyV: Buffer, bits: number): Buffer {
  const fixed = Buffer.concat([z, Buffer.from(`${label}\0`), partyU, partyV]);
  return counterMode(bits, (i) => createHash('sha256').update(i).update(fixed).digest());
}

export interface Credential {
  /** TPM2B_ID_OBJECT. */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET: the seed, encrypted to the EK. */
  encryptedSecret: Buffer;
}

/** A fresh seed and its encryption to the EK (ECDH on P-256 with KDFe, or RSA-OAEP). */
function seedFor(ek: TpmPublic): { seed: Buffer; encryptedSeed: Buffer } {
  if (ek.ecc) {
    if (ek.ecc.curve !== TPM_ECC_NIST_P256)
      throw new Error('only NIST P-256 ECC endorsement keys are supported');
    const ecdh = createECDH('prime256v1');
    const ephemeral = ecdh.generateKeys();
    const z = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), ek.ecc.x, ek.ecc.y]));
    const ex = ephemeral.subarray(1, 33);
    const ey = ephemeral.subarray(33);
    return {
      seed: kdfe(z, 'IDENTITY', ex, ek.ecc.x, DIGEST_BYTES * 8),
      encryptedSeed: Buffer.concat([sized(ex), sized(ey)]),
    };
  }
  const seed = randomBytes(DIGEST_BYTES);
  const encryptedSeed = publicEncrypt(
    {
      key: tpmPublicKey(ek),
      padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: 'sha256',
      oaepLabel: Buffer.from('IDENTITY\0'),
    },
    seed,
  );
  return { seed, encryptedSeed };
}

/**
 * Wraps `secret` (at most 32 bytes) for the TPM that holds `ek`, bound to the object named
 * `objectName`: what TPM2_MakeCredential(ek, secret, objectName) returns.
 */
export function makeCredential(ek: TpmPublic, objectName: Buffer, secret: Buffer): Credential {
  if (secret.length > DIGEST_BYTES) throw new Error(`a credential holds at most ${DIGEST_BYTES} bytes`);
  const sym = ek.symmetric;
  if (!sym || sym.algorithm !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB)
    throw new Error('the endorsement key is not a storage key with AES-CFB protection');
  const { seed, encryptedSeed } = seedFor(ek);
  const symKey = kdfa(seed, 'STORAGE', objectName, Buffer.alloc(0), sym.keyBits);
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(sized(secret)), cipher.final()]);
  const hmacKey = kdfa(seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), DIGEST_BYTES * 8);
  const outerHmac = createHmac('sha256', hmacKey).update(encIdentity).update(objectName).digest();
  return {
    credentialBlob: sized(Buffer.concat([sized(outerHmac), encIdentity])),
    encryptedSecret: sized(encryptedSeed),
  };
}
