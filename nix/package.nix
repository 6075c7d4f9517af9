# One llama.cpp build by the kit's recipe: a device of nix/pins.json at one of its pins.
# The layout is the kit's (<buildDir>/src, <buildDir>/cmake, <buildDir>/tools/git); the flags come from
# recipe.nix, which `invoke nix.check` proves equal to moebench/pins/build.py's. $out/bin holds the binaries,
# $out/share/moebench/build-info.json what `invoke nix.build` needs for the kit's build manifest.
{ lib, stdenv, fetchurl, git, jq, cmake, writeText, darwin, cudaPackages, autoAddDriverRunpath
, pins, device, pin, nixpkgsRev, kitRoot }:
let
  dev = pins.devices.${device};
  p = pins.pins.${pin};
  isCuda = dev.backend == "cuda";
  isMetal = dev.backend == "metal";
  # The build directory is known only when the build runs ($NIX_BUILD_TOP differs on macOS): the recipe
  # is evaluated with a placeholder that the configure phase replaces.
  recipe = import ./recipe.nix {
    inherit pins device pin;
    buildDir = "@build_dir@";
    cudaCompiler = if isCuda then "${cudaPackages.cuda_nvcc}/bin/nvcc" else null;
  };
  flagsFile = writeText "moebench-cmake-flags" (lib.concatStringsSep "\n" recipe.cmakeFlags + "\n");
  envFile = writeText "moebench-env" (lib.concatStrings (lib.mapAttrsToList (k: v: "${k}=${v}\n") recipe.env));
  shimFile = writeText "moebench-git-shim" recipe.gitShim;
  # a patched device has one patch per pin (flake.nix offers it only at those pins)
  patch = dev.patches.${pin} or null;
  patchFile = if patch == null then null else
    let path = kitRoot + "/${patch.path}"; in
    assert builtins.hashFile "sha256" path == patch.sha256; path;
  src =
    if p.source.type == "git" then builtins.fetchGit { url = p.source.url; rev = p.source.rev; allRefs = true; }
    else fetchurl { url = p.source.url; sha256 = p.source.sha256; };
  buildStdenv = if isCuda then cudaPackages.backendStdenv else stdenv;
  targets = lib.escapeShellArgs pins.targets.required;
in
buildStdenv.mkDerivation ({
  pname = "llama-cpp-${device}";
  version = "${pin}-${builtins.substring 0 7 p.commit}";
  inherit src;

  nativeBuildInputs = [ cmake jq ] ++ lib.optionals isCuda [ cudaPackages.cuda_nvcc autoAddDriverRunpath ];
  buildInputs =
    lib.optionals isCuda (with cudaPackages; [ cuda_cudart cuda_cccl libcublas ])
    ++ lib.optionals isMetal (with darwin.apple_sdk.frameworks; [ Accelerate Foundation Metal MetalKit CoreVideo CoreGraphics ]);

  dontUseCmakeConfigure = true;
  dontStrip = true;  # the kit does not strip either

  configurePhase = ''
    runHook preConfigure
    buildDir="$NIX_BUILD_TOP/moebench"
    mkdir -p "$buildDir/tools"
    cp -r . "$buildDir/src"
    chmod -R u+w "$buildDir/src"
    for generated in ${lib.escapeShellArgs p.generated_files}; do rm -f "$buildDir/src/$generated"; done

    # the tree that is compiled, as git's tree id (generated files left out, like moebench.hashing)
    treeHash=$(sh ${./tree-hash.sh} "$buildDir/src" ${git}/bin/git)
    ${lib.optionalString (p.tree_hash != null) ''
      if [ "$treeHash" != "${p.tree_hash}" ]; then
        echo "source tree hashes to $treeHash, lock.yaml llama_cpp.${pin}.tree_hash is ${p.tree_hash}" >&2
        exit 1
      fi
    ''}
    ${lib.optionalString (patchFile != null) ''
      (cd "$buildDir/src" && GIT_CEILING_DIRECTORIES="$buildDir" ${git}/bin/git apply -p1 --whitespace=nowarn ${patchFile})
    ''}

    cp ${shimFile} "$buildDir/tools/git"
    chmod 755 "$buildDir/tools/git"
    while IFS='=' read -r name value; do export "$name=''${value//@build_dir@/$buildDir}"; done < ${envFile}
    export PATH="$buildDir/tools:$PATH" GIT_CEILING_DIRECTORIES="$buildDir"
    # flags the toolchain's setup hooks add (CUDA host compiler and the like) first, the kit's recipe last
    read -ra cmakeArgs <<< "''${cmakeFlags:-}"
    toolchainFlags=("''${cmakeArgs[@]}")
    recipeFlags=()
    while IFS= read -r flag; do recipeFlags+=("''${flag//@build_dir@/$buildDir}"); done < ${flagsFile}
    cmake -S "$buildDir/src" -B "$buildDir/cmake" "''${toolchainFlags[@]}" "''${recipeFlags[@]}"
    runHook postConfigure
  '';

  buildPhase = ''
    runHook preBuild
    cmake --build "$buildDir/cmake" --target ${targets} -j "$NIX_BUILD_CORES"
    failed='{}'
    for target in ${lib.escapeShellArgs pins.targets.optional}; do
      cmake --build "$buildDir/cmake" --target "$target" -j "$NIX_BUILD_CORES" \
        || failed=$(jq -c --arg t "$target" '. + {($t): "the \($t) target failed to build"}' <<< "$failed")
    done
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    mkdir -p "$out/bin" "$out/share/moebench"
    for target in ${targets} ${lib.escapeShellArgs pins.targets.optional}; do
      if [ -f "$buildDir/cmake/bin/$target" ]; then cp "$buildDir/cmake/bin/$target" "$out/bin/"; fi
    done
    cudaPath=${if isCuda then "${cudaPackages.cuda_nvcc}/bin/nvcc" else ""}
    jq -n --arg system ${buildStdenv.hostPlatform.system} --arg nixpkgs_rev ${nixpkgsRev} \
      --arg device ${device} --arg pin ${pin} --arg commit ${p.commit} --arg source_tree_hash "$treeHash" \
      --arg build_dir "$buildDir" --argjson jobs "$NIX_BUILD_CORES" --argjson failed_targets "$failed" \
      --arg c "$(command -v "$CC")" --arg c_version "$("$CC" --version | head -n1)" \
      --arg cxx "$(command -v "$CXX")" --arg cxx_version "$("$CXX" --version | head -n1)" \
      --arg cmake "$(command -v cmake)" --arg cmake_version "$(cmake --version | head -n1 | sed 's/^cmake version //')" \
      --arg cuda "$cudaPath" --arg cuda_version "$([ -n "$cudaPath" ] && "$cudaPath" --version || true)" \
      --argjson cmake_flags "$(printf '%s\n' "''${recipeFlags[@]}" | jq -R . | jq -s .)" \
      --argjson toolchain_cmake_flags "$(printf '%s\n' "''${toolchainFlags[@]}" | jq -R 'select(. != "")' | jq -s .)" \
      --argjson env "$(while IFS='=' read -r name _; do jq -n --arg k "$name" --arg v "''${!name}" '{($k): $v}'; done < ${envFile} | jq -s add)" \
      '{system: $system, nixpkgs_rev: $nixpkgs_rev, device: $device, pin: $pin, commit: $commit,
        source_tree_hash: $source_tree_hash, build_dir: $build_dir, jobs: $jobs, failed_targets: $failed_targets,
        compiler: ({c: $c, c_version: $c_version, cxx: $cxx, cxx_version: $cxx_version}
                   + (if $cuda == "" then {} else {cuda: $cuda, cuda_version: $cuda_version} end)),
        cmake: $cmake, cmake_version: $cmake_version, cmake_flags: $cmake_flags,
        toolchain_cmake_flags: $toolchain_cmake_flags, env: $env}' > "$out/share/moebench/build-info.json"
    runHook postInstall
  '';

  meta = {
    description = "llama.cpp ${p.commit} for the ${device} profile, built by moebench's recipe";
    platforms = dev.systems;
    mainProgram = "llama-cli";
  };
} // lib.optionalAttrs (p.source.type != "git") {
  sourceRoot = p.source.subdir;  # the llama.cpp tree inside the sdist or archive
})
