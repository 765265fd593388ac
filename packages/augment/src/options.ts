/** How points outside the input are filled, as scipy.ndimage (which Keras calls) defines the modes. */
export type FillMode = 'nearest' | 'constant' | 'reflect' | 'wrap';

/** ImageDataGenerator's geometric arguments, camel-cased. */
export interface AugmentOptions {
  /** degrees; theta ~ uniform(-r, r) */
  rotationRange: number;
  /** fraction of the width when < 1, else pixels (Keras: an integer draws whole pixels) */
  widthShiftRange: number;
  /** fraction of the height when < 1, else pixels */
  heightShiftRange: number;
  /** degrees (Keras >= 2.2 interprets shear_range in degrees) */
  shearRange: number;
  /** z gives independent x and y factors in [1 - z, 1 + z]; or [low, high] */
  zoomRange: number | [number, number];
  horizontalFlip: boolean;
  verticalFlip: boolean;
  fillMode: FillMode;
  /** value for fillMode 'constant', in pixel units (before rescale) */
  cval: number;
}

/** The book's generator (DLwP listing 5.11 without rescale, which is a stream option). */
export const BOOK_AUGMENTATION: Readonly<AugmentOptions> = Object.freeze({
  rotationRange: 40,
  widthShiftRange: 0.2,
  heightShiftRange: 0.2,
  shearRange: 0.2,
  zoomRange: 0.2,
  horizontalFlip: true,
  verticalFlip: false,
  fillMode: 'nearest',
  cval: 0,
});

/** No-op options: every field off. */
export const NO_AUGMENTATION: Readonly<AugmentOptions> = Object.freeze({
  rotationRange: 0,
  widthShiftRange: 0,
  heightShiftRange: 0,
  shearRange: 0,
  zoomRange: 0,
  horizontalFlip: false,
  verticalFlip: false,
  fillMode: 'nearest',
  cval: 0,
});

const FILL_MODES: readonly FillMode[] = ['nearest', 'constant', 'reflect', 'wrap'];

/** Fills defaults and validates; throws RangeError naming the bad field. */
export function resolveAugmentOptions(partial: Partial<AugmentOptions>): AugmentOptions {
  const o: AugmentOptions = { ...NO_AUGMENTATION, ...partial };
  for (const name of ['rotationRange', 'widthShiftRange', 'heightShiftRange', 'shearRange', 'cval'] as const) {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new RangeError(`augment: ${name} must be a finite number, got ${v}`);
    if (name !== 'cval' && v < 0) throw new RangeError(`augment: ${name} must be >= 0, got ${v}`);
  }
  zoomBounds(o.zoomRange);
  if (!FILL_MODES.includes(o.fillMode)) {
    throw new RangeError(`augment: fillMode must be one of ${FILL_MODES.join(', ')}, got ${String(o.fillMode)}`);
  }
  return o;
}

/** Keras: a float z becomes [1 - z, 1 + z]; a pair is taken as is. */
export function zoomBounds(zoom: number | [number, number]): [number, number] {
  if (typeof zoom === 'number') {
    if (!Number.isFinite(zoom) || zoom < 0) throw new RangeError(`augment: zoomRange must be >= 0, got ${zoom}`);
    return [1 - zoom, 1 + zoom];
  }
  if (!Array.isArray(zoom) || zoom.length !== 2 || !zoom.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new RangeError(`augment: zoomRange must be a number or [low, high], got ${JSON.stringify(zoom)}`);
  }
  return [zoom[0], zoom[1]];
}
