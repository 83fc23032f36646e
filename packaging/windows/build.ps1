<#
.SYNOPSIS
    Build FedSeg Studio's Windows folder and installer: the Windows counterpart of
    packaging/Makefile, with the same names and paths.

.DESCRIPTION
    From a clean clone, on Windows 10/11 x64 with Python 3.11 (x64) and Inno Setup 6.3+:

        powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1                      # reader (CPU)
        powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 -Profile site-node   # CUDA torch

    Steps (each stops the script on failure):
      1. build venv   packaging\build\<profile>\venv (reused while constraints.txt and
                      pyproject.toml are older than its .installed stamp; -Clean rebuilds it)
                      torch first (CPU or CUDA index), then the pinned dependencies and PyInstaller
      2. icon         packaging\build\fedseg-studio.ico (packaging\icons.py)
      3. PyInstaller  packaging\dist\<profile>\fedseg-studio\ (FEDSEG_PROFILE=<profile>)
      4. aliases      fedseg.exe copied to Flower's program names (packaging\aliases.py)
      5. smoke check  fedseg.exe algorithms; fedseg.exe demo --headless --rounds 1
      6. installer    packaging\dist\<profile>\fedseg-studio-<profile>-<version>-win64-setup.exe

    Not tested on Windows in this project yet: see packaging\windows\README.md.
#>
[CmdletBinding()]
param(
    # reader: CPU torch. site-node: CUDA torch (PyTorch's cu130 index).
    [ValidateSet("reader", "site-node")]
    [string]$Profile = "reader",
    # The Python 3.11 x64 that creates the build venv (default: the py launcher's 3.11-64).
    [string]$Python = "",
    # Where torch comes from; default by profile (see $TorchIndexByProfile).
    [string]$TorchIndex = "",
    # Installer version; default: [project] version in pyproject.toml.
    [string]$AppVersion = "",
    # Recreate the build venv from nothing.
    [switch]$Clean,
    # Split the installer into setup.exe + setup-N.bin (needed past ~4.2 GB compressed).
    [switch]$DiskSpanning,
    [switch]$SkipSmoke,
    [switch]$SkipInstaller
)

$ErrorActionPreference = "Stop"
Set-StrictMode -Version 3.0
# PowerShell 7.3+: never turn a native program's stderr into a terminating error; exit
# codes are checked explicitly after every native command (Invoke-Checked).
$PSNativeCommandUseErrorActionPreference = $false

$BuildProfile = $Profile   # $PROFILE is also PowerShell's automatic variable: use our own name
$TorchVersion = "2.13.0"
$PyInstallerPins = @("pyinstaller==6.22.3", "pyinstaller-hooks-contrib==2026.9")
$TorchIndexByProfile = @{
    "reader"    = "https://download.pytorch.org/whl/cpu"
    "site-node" = "https://download.pytorch.org/whl/cu130"
}
$FlowerPrograms = @("flower-superexec", "flwr-serverapp")  # engine/federation/programs.py FLOWER_PROGRAMS

# Paths, as in the Makefile (HERE = packaging, BUILD = HERE\build\PROFILE, ...).
$Here   = Split-Path -Parent $PSScriptRoot          # packaging
$Root   = Split-Path -Parent $Here                  # the checkout
$Build  = Join-Path (Join-Path $Here "build") $BuildProfile
$Venv   = Join-Path $Build "venv"
$VenvPython = Join-Path $Venv "Scripts\python.exe"
$Dist   = Join-Path (Join-Path $Here "dist") $BuildProfile
$Bundle = Join-Path $Dist "fedseg-studio"
$Icon   = Join-Path (Join-Path $Here "build") "fedseg-studio.ico"
$SmokeOut = Join-Path $Build "smoke-demo"
$Iss    = Join-Path $PSScriptRoot "fedseg-studio.iss"

function Write-Step([string]$Text) {
    Write-Host ""
    Write-Host "==> $Text" -ForegroundColor Cyan
}

# Run a native program; stop on a non-zero exit code. Arguments go as an array, so that
# PowerShell never reads "-m" or "--index-url" as its own parameters. Inside, errors only
# "Continue": where stderr is redirected (ISE, remoting, `build.ps1 *> log`), Windows
# PowerShell turns each stderr line (pip's warnings...) into an error record, which
# "Stop" would make fatal; the exit code is what decides.
function Invoke-Checked([string]$Exe, [string[]]$ArgList) {
    Write-Host "> $Exe $($ArgList -join ' ')" -ForegroundColor DarkGray
    $ErrorActionPreference = "Continue"
    & $Exe @ArgList
    if ($LASTEXITCODE -ne 0) {
        throw "$Exe exited with code $LASTEXITCODE"
    }
}

# The same, returning the program's standard output (lines) instead of showing it.
function Get-CheckedOutput([string]$Exe, [string[]]$ArgList) {
    Write-Host "> $Exe $($ArgList -join ' ')" -ForegroundColor DarkGray
    $ErrorActionPreference = "Continue"
    $output = & $Exe @ArgList
    if ($LASTEXITCODE -ne 0) {
        throw "$Exe exited with code $LASTEXITCODE"
    }
    return $output
}

function Find-Iscc {
    $onPath = Get-Command "iscc.exe" -ErrorAction SilentlyContinue
    if ($onPath) { return $onPath.Source }
    $candidates = @()
    if (${env:ProgramFiles(x86)}) { $candidates += Join-Path ${env:ProgramFiles(x86)} "Inno Setup 6\ISCC.exe" }
    if ($env:ProgramFiles)        { $candidates += Join-Path $env:ProgramFiles "Inno Setup 6\ISCC.exe" }
    if ($env:LOCALAPPDATA)        { $candidates += Join-Path $env:LOCALAPPDATA "Programs\Inno Setup 6\ISCC.exe" }
    foreach ($candidate in $candidates) {
        if (Test-Path -LiteralPath $candidate) { return $candidate }
    }
    throw "Inno Setup 6 not found: put iscc.exe on PATH or install it to its default folder (https://jrsoftware.org/isinfo.php)"
}

# ---------------------------------------------------------------------------------------
# Preconditions that fail late and obscurely otherwise.
if ($Root -match '[^\x20-\x7E]') {
    throw "The checkout's path ($Root) has non-ASCII characters: PyInstaller and torch's DLLs misbehave there. Clone to e.g. C:\src\fedseg-studio."
}
# The bundle's deepest files are ~112 characters below packaging\dist\<profile>\fedseg-studio.
if ($Bundle.Length + 1 + 120 -gt 259) {
    Write-Warning "The checkout's path is long ($($Root.Length) characters): bundle files may pass MAX_PATH (260). Clone to a short path such as C:\src\fedseg-studio, or enable LongPathsEnabled."
}
if (-not $TorchIndex) { $TorchIndex = $TorchIndexByProfile[$BuildProfile] }

New-Item -ItemType Directory -Force -Path $Build | Out-Null
Push-Location $Here   # like `make -C packaging`: fedseg.spec, requirements.py... are relative to it
try {
    # -----------------------------------------------------------------------------------
    Write-Step "Build environment $Venv"
    $stamp = Join-Path $Venv ".installed"
    $inputs = @((Join-Path $Here "constraints.txt"), (Join-Path $Root "pyproject.toml"))
    $fresh = (-not $Clean) -and (Test-Path -LiteralPath $stamp)
    if ($fresh) {
        $stampTime = (Get-Item -LiteralPath $stamp).LastWriteTimeUtc
        foreach ($file in $inputs) {
            if ((Get-Item -LiteralPath $file).LastWriteTimeUtc -gt $stampTime) { $fresh = $false }
        }
    }
    if ($fresh) {
        Write-Host "up to date (delete $stamp or pass -Clean to reinstall)"
    }
    else {
        if ($Clean -and (Test-Path -LiteralPath $Venv)) { Remove-Item -LiteralPath $Venv -Recurse -Force }
        if ($Python) {
            Invoke-Checked $Python @("-m", "venv", $Venv)
        }
        elseif (Get-Command "py.exe" -ErrorAction SilentlyContinue) {
            Invoke-Checked "py.exe" @("-3.11-64", "-m", "venv", $Venv)
        }
        else {
            Invoke-Checked "python.exe" @("-m", "venv", $Venv)
        }
        Invoke-Checked $VenvPython @("-c", "import struct, sys; assert sys.version_info[:2] == (3, 11) and struct.calcsize('P') == 8, 'need Python 3.11 x64, got ' + sys.version; print(sys.version)")
        $pip = @("-m", "pip", "--disable-pip-version-check")

        # torch first, from the profile's index, so that nothing later pulls another torch.
        # PyPI stays reachable for torch's own dependencies (filelock, sympy...).
        Invoke-Checked $VenvPython ($pip + @("install", "--quiet", "torch==$TorchVersion", "--index-url", $TorchIndex, "--extra-index-url", "https://pypi.org/simple"))

        # pyproject.toml's dependencies, as a file pip reads (UTF-8 without BOM: Windows
        # PowerShell's `>` would write UTF-16).
        $requirementsTxt = Join-Path $Build "requirements.txt"
        $requirements = Get-CheckedOutput $VenvPython @("requirements.py", (Join-Path $Root "pyproject.toml"))
        [System.IO.File]::WriteAllLines($requirementsTxt, [string[]]$requirements, (New-Object System.Text.UTF8Encoding($false)))

        Invoke-Checked $VenvPython ($pip + @("install", "--quiet", "-c", "constraints.txt", "-r", $requirementsTxt) + $PyInstallerPins)
        Invoke-Checked $VenvPython @("-c", "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)")
        if ($BuildProfile -eq "site-node") {
            Invoke-Checked $VenvPython @("-c", "import sys, torch; sys.exit(0 if torch.version.cuda else 'site-node: this torch is a CPU build; check -TorchIndex')")
        }
        New-Item -ItemType File -Force -Path $stamp | Out-Null
    }

    # -----------------------------------------------------------------------------------
    Write-Step "Icon $Icon"
    Invoke-Checked $VenvPython @("icons.py", $Icon)

    # -----------------------------------------------------------------------------------
    Write-Step "PyInstaller folder $Bundle"
    if (Test-Path -LiteralPath $Bundle) { Remove-Item -LiteralPath $Bundle -Recurse -Force }
    $env:FEDSEG_PROFILE = $BuildProfile
    Invoke-Checked (Join-Path $Venv "Scripts\pyinstaller.exe") @(
        "--noconfirm", "--log-level", "WARN", "--distpath", $Dist, "--workpath", (Join-Path $Build "work"), "fedseg.spec")

    Write-Step "Flower aliases"
    Invoke-Checked $VenvPython @("aliases.py", $Bundle)
    foreach ($name in @("fedseg") + $FlowerPrograms) {
        $exe = Join-Path $Bundle "$name.exe"
        if (-not (Test-Path -LiteralPath $exe)) { throw "$exe is missing after aliases.py" }
    }

    # The installer refuses installation folders over 100 characters on the assumption
    # that the folder's deepest files lie well under 160 characters below it: check it.
    $deepest = Get-ChildItem -LiteralPath $Bundle -Recurse -File |
        ForEach-Object { $_.FullName.Substring($Bundle.Length + 1) } |
        Sort-Object -Property Length -Descending | Select-Object -First 1
    Write-Host "deepest file ($($deepest.Length) characters below the folder): $deepest"
    if ($deepest.Length -gt 150) {
        throw "A file lies $($deepest.Length) characters below the folder: with the installer's 100-character folder limit paths could pass MAX_PATH. Lower MaxAppDirLength in fedseg-studio.iss."
    }
    $size = (Get-ChildItem -LiteralPath $Bundle -Recurse -File | Measure-Object -Property Length -Sum).Sum
    Write-Host ("folder: {0:N0} MB" -f ($size / 1MB))

    # -----------------------------------------------------------------------------------
    if (-not $SkipSmoke) {
        Write-Step "Smoke check"
        $fedseg = Join-Path $Bundle "fedseg.exe"
        Invoke-Checked $fedseg @("algorithms")
        if (Test-Path -LiteralPath $SmokeOut) { Remove-Item -LiteralPath $SmokeOut -Recurse -Force }
        Invoke-Checked $fedseg @("demo", "--headless", "--rounds", "1", "--out", $SmokeOut)
        # On Windows the launcher cannot end a process group's leftovers (engine/federation/
        # launcher.py): report and end any process still running from the folder.
        Start-Sleep -Seconds 2
        $leftovers = @(Get-Process -ErrorAction SilentlyContinue | Where-Object {
            $path = $null
            try { $path = $_.Path } catch { }
            $path -and $path.StartsWith($Bundle, [System.StringComparison]::OrdinalIgnoreCase)
        })
        if ($leftovers.Count -gt 0) {
            foreach ($process in $leftovers) {
                Write-Warning "left running after the demo: $($process.ProcessName) (pid $($process.Id)); stopping it"
                Stop-Process -Id $process.Id -Force -ErrorAction SilentlyContinue
            }
        }
    }

    # -----------------------------------------------------------------------------------
    if (-not $SkipInstaller) {
        Write-Step "Installer"
        if (-not $AppVersion) {
            $AppVersion = Get-CheckedOutput $VenvPython @("-c", "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['project']['version'])", (Join-Path $Root "pyproject.toml"))
            $AppVersion = "$AppVersion".Trim()
        }
        $iscc = Find-Iscc
        $isccArgs = @(
            "/DBundleDir=$Bundle",
            "/DAppVersion=$AppVersion",
            "/DProfile=$BuildProfile",
            "/DSetupIcon=$Icon",
            "/O$Dist"
        )
        if ($DiskSpanning) { $isccArgs += "/DDiskSpanning=yes" }
        Invoke-Checked $iscc ($isccArgs + @($Iss))
        $setup = Join-Path $Dist "fedseg-studio-$BuildProfile-$AppVersion-win64-setup.exe"
        if (-not (Test-Path -LiteralPath $setup)) { throw "ISCC finished but $setup is not there" }
        Write-Host ("installer: {0} ({1:N0} MB)" -f $setup, ((Get-Item -LiteralPath $setup).Length / 1MB))
    }
}
finally {
    Pop-Location
}
