/**
 * A local OS list for Raspberry Pi Imager 2.x (its `os_list` JSON, rpi-imager
 * doc/json-schema/os-list-schema.json) naming images made by `meter-agent image`, with
 * `init_format: cloudinit-rpi` so Imager offers its OS customisation (Wi-Fi, SSH, user, locale).
 * Open the file in Imager (App Options > Content Repository > Use custom file, or
 * `rpi-imager --repo FILE`). Pure: the caller measures the image.
 */

export interface ImagerImage {
  name: string;
  description: string;
  /** Absolute path of the image file (.img or .img.xz) as Imager will open it. */
  path: string;
  /** Size and SHA-256 of the uncompressed image: Imager refuses a write whose hash differs. */
  extractSize: number;
  extractSha256: string;
  /** Size and SHA-256 of the file itself (the same as above for an uncompressed .img). */
  downloadSize: number;
  downloadSha256: string;
  /** YYYY-MM-DD. */
  releaseDate: string;
  /** A .bmap beside the image (used by Imager only for fastboot writes). */
  bmapPath?: string;
}

/** file:// URL of an absolute POSIX path, each segment percent-encoded. */
export function fileUrl(path: string): string {
  if (!path.startsWith('/')) throw new TypeError(`not an absolute path: ${path}`);
  return `file://${path.split('/').map(encodeURIComponent).join('/')}`;
}

/** The OS list: one entry per image, for 64-bit Pis (Raspberry Pi OS Lite arm64 runs on Pi 3, 4 and 5). */
export function imagerOsList(images: readonly ImagerImage[]): { os_list: Record<string, unknown>[] } {
  return {
    os_list: images.map((i) => ({
      name: i.name,
      description: i.description,
      // An icon Imager bundles (src/icons/), so the list works offline.
      icon: 'icons/cat_home_automation.png',
      url: fileUrl(i.path),
      extract_size: i.extractSize,
      extract_sha256: i.extractSha256,
      image_download_size: i.downloadSize,
      image_download_sha256: i.downloadSha256,
      release_date: i.releaseDate,
      devices: ['pi5', 'pi4', 'pi3'],
      architecture: 'armv8',
      init_format: 'cloudinit-rpi',
      ...(i.bmapPath ? { bmap_url: fileUrl(i.bmapPath) } : {}),
    })),
  };
}
