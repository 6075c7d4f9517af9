# The kit's build recipe (moebench/pins/build.py `recipe`) as a pure function: no nixpkgs, so Debian's
# nix-instantiate evaluates it offline and `invoke nix.check` compares it with the Python one.
#   pins:          nix/pins.json, parsed
#   device, pin:   names in pins.devices and pins.pins
#   buildDir:      the directory holding src/, cmake/ and tools/ as the compilers see it
#   shim:          the generated git answering build-info queries (default <buildDir>/tools/git)
#   cudaCompiler:  nvcc for cuda devices
{ pins, device, pin ? pins.devices.${device}.default_pin, buildDir, shim ? "${buildDir}/tools/git"
, cudaCompiler ? null }:
let
  dev = pins.devices.${device};
  p = pins.pins.${pin};
  target = pins.prefix_map_target;
  # one string: -ffile-prefix-map and -fdebug-prefix-map map the build directory away
  prefixMaps = "-ffile-prefix-map=${buildDir}=${target} -fdebug-prefix-map=${buildDir}=${target}";
  commaSeparated = builtins.replaceStrings [ " " ] [ "," ] prefixMaps;
  cudaFlags =
    if dev.backend != "cuda" then [ ]
    else if cudaCompiler == null then throw "recipe.nix: device ${device} is a cuda device: give cudaCompiler"
    else [
      # nvcc writes its temporary file names into device code: keep them next to the object
      "-DCMAKE_CUDA_FLAGS=--objdir-as-tempdir -Xcompiler=${commaSeparated}"
      "-DCMAKE_CUDA_COMPILER=${cudaCompiler}"
    ];
  buildNumber = if p.build_number == null then 0 else p.build_number;
in {
  cmakeFlags = dev.cmake_flags ++ [
    "-DCMAKE_C_FLAGS=${prefixMaps}"
    "-DCMAKE_CXX_FLAGS=${prefixMaps}"
    "-DGIT_EXECUTABLE=${shim}"
  ] ++ cudaFlags;
  env = {
    SOURCE_DATE_EPOCH = pins.source_date_epoch;
    LC_ALL = "C";
    TZ = "UTC";
    CFLAGS = prefixMaps;
    CXXFLAGS = prefixMaps;
  };
  gitShim = builtins.replaceStrings [ "{short}" "{commit}" "{build_number}" ]
    [ (builtins.substring 0 7 p.commit) p.commit (toString buildNumber) ] pins.git_shim_template;
}
