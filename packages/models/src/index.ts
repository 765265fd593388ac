// @catdog/models: the book's convnet, VGG16 and MobileNetV2 bases, heads, summary, weight loading.
// Pure @tensorflow/tfjs: callers choose and initialise the backend.
export { buildConvnet, kernelInitializer, CONVNET_MIN_INPUT_SIZE, type ConvnetOptions } from './convnet.js';
export {
  buildVgg16Base,
  ensureVgg16ImagenetWeights,
  VGG16_NOTOP_WEIGHTS,
  type Vgg16Options,
  type EnsureVgg16Options,
} from './vgg16.js';
export {
  loadMobileNetV2Base,
  mobilenetV2Folder,
  applyKerasCorrectPad,
  type MobileNetV2Options,
  type MobileNetV2Alpha,
} from './mobilenet.js';
export {
  BASES,
  BASE_NAMES,
  FINE_TUNE_FROM,
  INPUT_SCALINGS,
  baseSpec,
  loadBase,
  inputScaling,
  isBaseName,
  type BaseName,
  type BaseSpec,
  type LoadBaseOptions,
  type InputScaling,
  type InputScalingName,
  type InputScalingSpec,
} from './bases.js';
export {
  buildHead,
  buildSharedHead,
  baseFeatures,
  stackBaseAndHead,
  type HeadOptions,
  type SharedHead,
} from './head.js';
export {
  countTrainableWeights,
  countParams,
  setTrainableFrom,
  applyKerasBatchNormSemantics,
  leafLayers,
  type SetTrainableResult,
} from './layers.js';
export { modelSummary } from './summary.js';
export {
  readKerasH5Weights,
  loadKerasH5Weights,
  type KerasH5Weights,
  type KerasH5Weight,
  type LoadKerasH5Options,
  type LoadKerasH5Result,
} from './h5.js';
export { copyWeightsByName } from './weights.js';
export { loadLayersModelFrom, saveLayersModelTo, setTopologyInputShape, type LoadLayersModelOptions } from './io.js';
export { getFile, defaultCacheDir, fileHash, type DownloadProgress, type GetFileOptions } from './download.js';
export { compileFrozenBase, type FrozenBase, type FrozenBaseStats, type CompileFrozenBaseOptions } from './frozen.js';
export {
  ImageResizing,
  withPreprocessing,
  outputActivation,
  resolvePixelScaling,
  checkLabels,
  classProbabilities,
  classifyPixels,
  toClassification,
  type ExportedLabels,
  type Classification,
  type PixelScaling,
  type PreprocessingOptions,
  type ResizeInterpolation,
} from './image-input.js';
export { classifierOutput, classifierLoss, modelClassCount, type ClassifierOutput } from './classifier.js';
export {
  gradCam,
  gradCamBatch,
  lastConvLayer,
  heatmapRgba,
  jet,
  type GradCamOptions,
  type GradCamResult,
} from './gradcam.js';
export {
  overlayHeatmap,
  explainPhoto,
  explainPhotos,
  writeHeatmaps,
  EXPLAIN_BATCH,
  type OverlayOptions,
  type ExplainedPhoto,
  type WriteHeatmapsOptions,
  type WrittenHeatmap,
} from './heatmap-image.js';
export {
  exportModel,
  loadExportedModel,
  decodePhoto,
  classifyPhoto,
  compareExportVariants,
  quantizeWeights,
  keepsFloat16InUint8,
  float16Bits,
  uint8Range,
  QUANTIZATIONS,
  type Quantization,
  type ExportOptions,
  type ExportResult,
  type LabelledPhoto,
  type ExportVariantReport,
} from './export.js';
